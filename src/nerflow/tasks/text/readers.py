"""Text classification's readers: TSV, CSV, JSON Lines, Parquet and Hugging Face datasets
saved to disk, each read into (line, text, label, id) rows with errors that name the file and
the line (or record).
"""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from nerflow import NerflowError
from nerflow.core.dataset import SPLIT_ALIASES, folder_format, open_source, pick_split
from nerflow.core.files import decode_error, file_encoding, open_binary, text_lines

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

TEXT_COLUMNS = ("text", "document", "sentence", "review", "content")
LABEL_COLUMNS = ("label", "labels", "class", "sentiment", "target")

# the Arrow schema of a read source
TEXT_TABLE = pa.schema([("text", pa.string()), ("label", pa.string()), ("source_line", pa.int32()),
                        ("id", pa.string()), ("source", pa.string())])
FORMATS = ("tsv", "csv", "jsonl", "parquet", "hf")


def detect_text_format(path) -> str:
    """A folder is an HF dataset; .csv is CSV, .jsonl/.json JSON Lines, .parquet Parquet, any
    other file (NSMC's .txt, .tsv) TSV."""
    if path.is_dir():
        return folder_format(path)
    suffix = path.suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}.get(suffix, "tsv")


def _column(where: str, names: list[str] | None, wanted, defaults: tuple[str, ...], fallback: int, what: str) -> int | str:
    """The index (rows) or name (records) of the ``what`` column: the one params name, else the
    first of ``defaults`` present, else ``fallback`` (files without a header)."""
    if names is None:  # rows without a header: indices only
        if isinstance(wanted, str):
            raise ValueError(f"{where}: data.{what}_column {wanted!r} names a column, but the file has no header "
                             f"(give a 0-based index, or set data.header: true)")
        return fallback if wanted is None else wanted
    if isinstance(wanted, int):
        return wanted
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"{where}: no column {wanted!r} (data.{what}_column; has {', '.join(map(str, names))})")
        return wanted
    found = next((n for n in names if str(n).strip().lower() in defaults), None)
    if found is None:
        raise ValueError(f"{where}: no {what} column (looked for {', '.join(defaults)}; has "
                         f"{', '.join(map(str, names))}): set data.{what}_column")
    return found


def _label(value, label_names: list[str] | None, at: str) -> str:
    """A label as the dataset keeps it: its name. An integer id (or a digit string) with
    ``label_names`` becomes that name; one outside them is kept as written, for validation to
    report with its line."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):

        raise NerflowError(f"{at}: empty label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if label_names is not None and (isinstance(value, int) or text.lstrip("-").isdigit()):
        i = int(text)
        return label_names[i] if 0 <= i < len(label_names) else text
    return text


def _rows(path, opts, delimiter: str):
    """(line, text, label, id) of each row of a TSV/CSV file. TSV fields are taken as written
    (a quote is a character: reviews hold them); CSV follows RFC 4180 quoting, a quoted field
    may span lines (the line is where its row starts)."""
    csv.field_size_limit(1 << 30)
    with open_binary(path) as fh:
        encoding = file_encoding(path, fh.read(4096), opts.encoding)
        fh.seek(0)
        text = io.TextIOWrapper(fh, encoding=encoding, newline="")
        quoting = {"quoting": csv.QUOTE_NONE} if delimiter == "\t" else {}
        reader = csv.reader(text, delimiter=delimiter, **quoting)
        try:
            first = next(reader, None)
            if first is None:
                raise NerflowError(f"{path}: no rows (empty file)")
            given = [c for c in (opts.text_column, opts.label_column) if isinstance(c, str)]
            lowered = {c.strip().lower() for c in first}
            header = opts.header if opts.header is not None else bool(
                lowered & set(TEXT_COLUMNS + LABEL_COLUMNS) or set(given) & set(first))
            names = first if header else None
            width = len(first)
            try:
                ti = _column(f"{path}:1", names, opts.text_column, TEXT_COLUMNS, max(0, width - 2), "text")
                li = _column(f"{path}:1", names, opts.label_column, LABEL_COLUMNS, width - 1, "label")
            except ValueError as exc:
                raise NerflowError(str(exc)) from None
            if names is not None:
                ti, li = (names.index(c) if isinstance(c, str) else c for c in (ti, li))
            ii = next((i for i, n in enumerate(names or []) if n.strip().lower() == "id"), None)
            if ti == li:
                raise NerflowError(f"{path}:1: the text and label columns are the same (column {ti})")
            need = max(ti, li) + 1
            rows = [] if header else [first]

            def numbered():
                for row in rows:
                    yield 1, row
                end = reader.line_num
                for row in reader:
                    yield end + 1, row
                    end = reader.line_num
            for line, row in numbered():
                if not row or row == [""]:
                    continue
                if len(row) < need:
                    raise NerflowError(f"{path}:{line}: {len(row)} column(s), expected at least {need} "
                                       f"(text in column {ti}, label in column {li}; delimiter {delimiter!r})")
                yield line, row[ti], _label(row[li], opts.label_names, f"{path}:{line}"), \
                    row[ii] if ii is not None and ii < len(row) else ""
        except csv.Error as exc:
            raise NerflowError(f"{path}:{reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from None
        except UnicodeDecodeError:

            raise decode_error(path, encoding) from None


def _record_rows(where: str, records, opts, numbering: str = "record"):
    """(record number, text, label, id) of dict records (JSON Lines, Parquet, HF datasets)."""
    text_key = label_key = None
    for n, rec in records:
        at = f"{where}:{n}" if numbering == "line" else f"{where}: record {n}"
        if not isinstance(rec, dict):
            raise NerflowError(f"{at}: expected an object with a text and a label")
        if text_key is None:
            try:
                text_key = _column(at, list(rec), opts.text_column, TEXT_COLUMNS, 0, "text")
                label_key = _column(at, list(rec), opts.label_column, LABEL_COLUMNS, 1, "label")
            except ValueError as exc:
                raise NerflowError(str(exc)) from None
            if isinstance(text_key, int) or isinstance(label_key, int):
                raise NerflowError(f"{at}: records name their fields: set data.text_column / label_column to names")
        if text_key not in rec or label_key not in rec:
            raise NerflowError(f"{at}: no {text_key if text_key not in rec else label_key!r} field")
        text = rec[text_key]
        if text is not None and not isinstance(text, str):
            raise NerflowError(f"{at}: {text_key!r} is {type(text).__name__}, expected a string")
        yield n, text, _label(rec[label_key], opts.label_names, at), str(rec.get("id", "") or "")


def _jsonl_rows(path, opts):

    def records():
        for lineno, line in text_lines(path, opts.encoding):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise NerflowError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None

    return _record_rows(str(path), records(), opts, "line")


def _parquet_rows(path, opts):

    try:
        source = pq.ParquetFile(path)
    except Exception as exc:
        raise NerflowError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    rows = (row for batch in source.iter_batches(batch_size=10_000) for row in batch.to_pylist())
    return _record_rows(str(path), enumerate(rows, 1), opts)


def _hf_parts(loaded, where: str, opts) -> dict:
    """{split: rows} of a loaded Dataset / DatasetDict; a ClassLabel column gives the label names."""
    from datasets import Dataset

    parts = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    out = {}
    for split, ds in parts.items():
        names = opts.label_names
        for col, feature in ds.features.items():
            if hasattr(feature, "names") and (opts.label_column in (None, col)) and col in LABEL_COLUMNS + (opts.label_column,):
                names = list(feature.names)
        options = opts.model_copy(update={"label_names": names})
        out[SPLIT_ALIASES.get(split, split)] = _record_rows(f"{where}/{split}", enumerate(iter(ds), 1), options)
    return out


def _table(rows, source: str):
    """Rows (line, text, label, id) into an Arrow table of the text schema."""
    lines, texts, labels, ids = [], [], [], []
    for line, text, label, id_ in rows:
        lines.append(line)
        texts.append(text)
        labels.append(label)
        ids.append(id_)
    n = len(lines)
    return pa.table([pa.array(texts, pa.string()), pa.array(labels, pa.string()), pa.array(lines, pa.int32()),
                     pa.array(ids, pa.string()), pa.array([source] * n, pa.string())], schema=TEXT_TABLE)


def read_text_source(src, p, fill: str | None = None):
    """One source of a text-classification corpus, as data.read_corpus reads it: ({split:
    table}, how it is named, its local path (None from the Hub), format)."""
    opts = src.options(p)
    where, path, loaded = open_source(src, fill)
    if loaded is not None:
        fmt, parts = "hf", _hf_parts(loaded, where, opts)
    else:
        fmt = detect_text_format(path) if opts.format == "auto" else opts.format
        if fmt in ("conll", "klue"):
            raise NerflowError(f"{where}: data.format {fmt} holds tags per token; text classification reads "
                               f"{', '.join(FORMATS)}")
        if fmt == "hf":
            from datasets import load_from_disk

            try:
                parts = _hf_parts(load_from_disk(str(path)), str(path), opts)
            except FileNotFoundError as exc:
                raise NerflowError(f"{path}: not a Hugging Face dataset saved to disk ({exc})") from None
        elif fmt in ("tsv", "csv"):
            parts = {"all": _rows(path, opts, "\t" if fmt == "tsv" else ",")}
        elif fmt == "jsonl":
            parts = {"all": _jsonl_rows(path, opts)}
        else:
            parts = {"all": _parquet_rows(path, opts)}
    tables = {name: _table(rows, src.label()) for name, rows in pick_split(parts, src, fill, where).items()}
    for name, table in tables.items():
        if not table.num_rows:
            raise NerflowError(f"{where}: no rows" + (f" in split {name}" if name != "all" else ""))
    return tables, where, path, fmt


# --------------------------------------------------------------------------- encoding


