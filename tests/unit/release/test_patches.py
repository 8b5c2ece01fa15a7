"""The BentoML/uvicorn patches apply only to the versions they were tested with."""

from nerflow.release import patches


def test_a_patch_steps_aside_with_one_warning_on_an_untested_version(monkeypatch, capsys):
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    before = CorkDispatcher.TICKET_INTERVAL
    assert patches._tested("bentoml", "bentoml._internal.marshal.dispatcher", "CorkDispatcher", "TICKET_INTERVAL") \
        is CorkDispatcher  # the installed (locked) version is a tested one
    monkeypatch.setitem(patches.TESTED, "bentoml", ((9, 0), (9, 1)))
    monkeypatch.setattr(patches, "_warned", set())
    assert patches.install_batch_poll(7) == 7
    patches.install_batch_poll(8)
    assert CorkDispatcher.TICKET_INTERVAL == before  # not patched
    assert patches.batch_poll_ms() == 0.0  # none set by nerflow
    lines = [line for line in capsys.readouterr().err.splitlines() if "step aside" in line]
    assert len(lines) == 1 and lines[0].startswith("nerflow: warning: bentoml ") and "(9.0 up to 9.1)" in lines[0]


def test_a_patch_steps_aside_when_the_name_it_patches_is_gone(monkeypatch, capsys):
    monkeypatch.setattr(patches, "_warned", set())
    assert patches._tested("uvicorn", "uvicorn", "Server", "no_such_method") is None
    assert "has no uvicorn.Server.no_such_method: its patches step aside" in capsys.readouterr().err


def test_release_numbers_compare_as_numbers():
    assert patches._release("1.4.39") == (1, 4, 39) and patches._release("0.54.0") == (0, 54, 0)
    assert patches._release("1.5.0rc1") == (1, 5, 0) and (1, 4) <= patches._release("1.4.39") < (1, 5)
