"""Text classification (a label per text: sentiment, topic, intent), the second task nerflow
runs through the same workflow (nerflow.tasks holds the interface the steps call).

The canonical text dataset is a ``DatasetDict`` (train/validation/test) with columns ``text``
(str; empty or null kept as read, so validation can report it), ``label`` (str: the label's
name; one outside the label set is kept as written, so validation can name its line),
``source_line`` (1-based line, or record number, in the source), ``id`` and ``source``.
``manifest.json`` records ``task: text-classification``, the label set (``labels``, from
``data.label_names`` or the labels the data has), ``label_set_from`` (params | data) and per
split the texts, characters and label counts.

Long texts are never cut silently: ``encode`` keeps a text's head and tail (or head) within
``max_length`` sub-tokens, as ``preprocess.truncation`` says, and reports which were cut.
"""

from __future__ import annotations

from typing import Sequence

TEXT_COLUMNS = ("text", "document", "sentence", "review", "content")
LABEL_COLUMNS = ("label", "labels", "class", "sentiment", "target")


class Encoded:
    """Sub-token ids of texts cut to ``max_length`` (specials included): ``input_ids``,
    ``token_type_ids`` (None when the model takes none), ``lengths`` (sub-tokens of each whole
    text, specials included) and ``cut`` (True where the text was longer than max_length)."""

    def __init__(self, input_ids, token_type_ids, lengths, cut):
        self.input_ids, self.token_type_ids, self.lengths, self.cut = input_ids, token_type_ids, lengths, cut


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text ([CLS] / [SEP], <s> / </s>),
    read from how it encodes one: its post-processor is the reference, whatever the class."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    raise ValueError(f"{type(tokenizer).__name__}: cannot find where a text goes between its special tokens")


def encode(tokenizer, texts: Sequence[str | None], max_length: int, truncation: str = "head_tail",
           head_share: float = 0.25) -> Encoded:
    """Tokenize ``texts`` whole (no truncation by the tokenizer), then keep, of a text over
    ``max_length`` sub-tokens (specials included), its first ``head_share`` of the budget and
    its end (``head_tail``, Sun et al. 2019: the best of head, tail and head+tail for long
    reviews), or its start (``head``)."""
    prefix, suffix = special_tokens(tokenizer)
    specials = len(prefix) + len(suffix)
    budget = max(1, max_length - specials)
    head = budget if truncation == "head" else int(round(budget * head_share))
    tail = budget - head
    pieces = tokenizer([t or "" for t in texts], add_special_tokens=False, return_attention_mask=False,
                       return_token_type_ids=False, verbose=False)["input_ids"] if texts else []
    input_ids, lengths, cut = [], [], []
    for ids in pieces:
        lengths.append(len(ids) + specials)
        over = len(ids) > budget
        cut.append(over)
        if over:
            ids = ids[:head] + (ids[len(ids) - tail:] if tail else [])
        input_ids.append(prefix + ids + suffix)
    types = [[0] * len(ids) for ids in input_ids] if "token_type_ids" in tokenizer.model_input_names else None
    return Encoded(input_ids, types, lengths, cut)


# ----------------------------------------------------------------------------- reading

TEXT_TABLE = None  # the Arrow schema of a read source, built on first use (pyarrow imported lazily)
FORMATS = ("tsv", "csv", "jsonl", "parquet", "hf")


def _schema():
    import pyarrow as pa

    global TEXT_TABLE
    if TEXT_TABLE is None:
        TEXT_TABLE = pa.schema([("text", pa.string()), ("label", pa.string()), ("source_line", pa.int32()),
                                ("id", pa.string()), ("source", pa.string())])
    return TEXT_TABLE


def detect_text_format(path) -> str:
    """A folder is an HF dataset; .csv is CSV, .jsonl/.json JSON Lines, .parquet Parquet, any
    other file (NSMC's .txt, .tsv) TSV."""
    from nerflow.readers import detect_format

    if path.is_dir():
        return detect_format(path)
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
        from nerflow import NerflowError

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
    import csv
    import io

    from nerflow import NerflowError
    from nerflow.readers import _encoding, _open

    csv.field_size_limit(1 << 30)
    with _open(path) as fh:
        encoding = _encoding(path, fh.read(4096), opts.encoding)
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
            from nerflow.readers import _decode_error

            raise _decode_error(path, encoding) from None


def _record_rows(where: str, records, opts, numbering: str = "record"):
    """(record number, text, label, id) of dict records (JSON Lines, Parquet, HF datasets)."""
    from nerflow import NerflowError

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
    import json

    from nerflow import NerflowError
    from nerflow.readers import text_lines

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
    import pyarrow.parquet as pq

    from nerflow import NerflowError

    try:
        source = pq.ParquetFile(path)
    except Exception as exc:
        raise NerflowError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    rows = (row for batch in source.iter_batches(batch_size=10_000) for row in batch.to_pylist())
    return _record_rows(str(path), enumerate(rows, 1), opts)


def _hf_parts(loaded, where: str, opts) -> dict:
    """{split: rows} of a loaded Dataset / DatasetDict; a ClassLabel column gives the label names."""
    from datasets import Dataset

    from nerflow.readers import SPLIT_ALIASES

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
    import pyarrow as pa

    lines, texts, labels, ids = [], [], [], []
    for line, text, label, id_ in rows:
        lines.append(line)
        texts.append(text)
        labels.append(label)
        ids.append(id_)
    n = len(lines)
    return pa.table([pa.array(texts, pa.string()), pa.array(labels, pa.string()), pa.array(lines, pa.int32()),
                     pa.array(ids, pa.string()), pa.array([source] * n, pa.string())], schema=_schema())


def read_text_source(src, p, fill: str | None = None):
    """One source of a text-classification corpus, as data.read_corpus reads it: ({split:
    table}, how it is named, its local path (None from the Hub), format)."""
    from nerflow import NerflowError, hub
    from nerflow.data import pick_split
    from nerflow.params import resolve_path

    opts = src.options(p)
    if src.hub:
        where, path, fmt = hub.describe(src), None, "hf"
        parts = _hf_parts(hub.load_dataset(src.hub, src.name, key=f"data.{fill or 'path'}"), where, opts)
    else:
        where, path = src.path, resolve_path(src.path)
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


def label_order(labels) -> list[str]:
    """The label set in a stable order: numerically when every label is an integer, else by name."""
    labels = set(labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def prepare_text_data(p, out_dir, origin=None, source_names=None) -> dict:
    """prepare_data for text classification (the canonical text dataset, see the module doc)."""
    import pyarrow.compute as pc
    from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value, disable_progress_bars

    from nerflow.data import SPLITS, content_hash, read_corpus, rows, write_dataset

    disable_progress_bars()
    tables, sources, paths, layout = read_corpus(p, read=read_text_source)
    seen = {label for t in tables.values() for label in pc.unique(t["label"]).to_pylist()}
    labels = list(p.label_names) if p.label_names else label_order(seen)
    features = Features({"text": Value("string"), "label": Value("string"), "source_line": Value("int32"),
                         "id": Value("string"), "source": Value("string")})
    version = content_hash({split: ((t, lab, src) for t, lab, src in rows(table, "text", "label", "source"))
                            for split, table in tables.items()})
    dataset = DatasetDict({split: Dataset(t.cast(features.arrow_schema), info=DatasetInfo(features=features),
                                          fingerprint=f"{version[:16]}-{split}") for split, t in tables.items()})
    kinds = {"tsv": "row_lines", "csv": "row_lines", "jsonl": "record_lines"}
    split_fmts = {split: parts[0][2] for split, parts in layout.items()}
    manifest = {
        "task": "text-classification",
        "content_hash": version,
        "level": "text",
        "formats": split_fmts,
        "source_units": {split: kinds.get(split_fmts[split], "records") for split in tables},
        "labels": labels,
        "label_set_from": "params" if p.label_names else "data",
        "sources": {split: _renamed(src, source_names) for split, src in sources.items()},
        "splits": {split: _split_facts(t) for split, t in tables.items() if split in SPLITS},
    }
    return write_dataset(out_dir, dataset, manifest, tables, layout, paths, kinds, p, origin, source_names)


def _renamed(source: str, names: dict | None) -> str:
    for local, name in (names or {}).items():
        source = source.replace(local, name)
    return source


def _split_facts(table) -> dict:
    import pyarrow.compute as pc

    counts = pc.value_counts(table["label"]).flatten()
    return {"texts": table.num_rows,
            "characters": int(pc.sum(pc.fill_null(pc.utf8_length(table["text"]), 0)).as_py() or 0),
            "label_counts": dict(sorted(zip(*(v.to_pylist() for v in counts))))}


# --------------------------------------------------------------------------- encoding


def encode_dataset(params, dataset, manifest: dict, tokenizer):
    """Text classification's features: each text's sub-token ids, cut to max_length as
    ``preprocess.truncation`` says, and its label id. ({split: columns}, {split: stats}, extra
    info for preprocess.json)."""
    from nerflow import NerflowError

    index = {label: i for i, label in enumerate(manifest["labels"])}
    out, stats = {}, {}
    for split in dataset:
        rows = dataset[split]
        texts, labels = list(rows["text"]), list(rows["label"])
        unknown = next((k for k, label in enumerate(labels) if label not in index), None)
        if unknown is not None:
            line = rows[unknown]["source_line"]
            raise NerflowError(f"{manifest.get('sources', {}).get(split, split)}:{line}: label {labels[unknown]!r} is not in "
                               f"the label set {manifest['labels']} (validation's label_set check reports these)")
        enc = encode(tokenizer, texts, params.max_length, params.truncation, params.head_share)
        columns = {"input_ids": enc.input_ids, "attention_mask": [[1] * len(ids) for ids in enc.input_ids],
                   "labels": [index[label] for label in labels]}
        if enc.token_type_ids is not None:
            columns["token_type_ids"] = enc.token_type_ids
        out[split] = columns
        stats[split] = {"texts": len(texts), "truncated": int(sum(enc.cut)),
                        "max_subtokens": max(enc.lengths, default=0),
                        "mean_subtokens": round(sum(enc.lengths) / max(len(enc.lengths), 1), 1)}

    def words():
        return (text or "" for split in dataset for text in dataset[split]["text"])

    return out, stats, {"truncation": params.truncation, "head_share": params.head_share, "level": "text", "words": words}
