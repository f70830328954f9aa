"""Shared fixtures: generated Countdown data and the location of the official UFT data."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "uft"


@pytest.fixture(scope="session")
def uft_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("official UFT data not found next to the repository (../shared/data/uft)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def countdown_jsonl(tmp_path_factory) -> Path:
    from unift.data.export import write_jsonl
    from unift.tasks.countdown import CountdownTask

    path = tmp_path_factory.mktemp("data") / "countdown.jsonl"
    write_jsonl(CountdownTask().generate(24, seed=5, min_numbers=3, max_numbers=3), path)
    return path


@pytest.fixture(scope="session")
def tiny():
    """The tiny random Llama with the embedded tokenizer: (model, tokenizer)."""
    from unift.models import load_model

    return load_model("tiny", seed=0)


def pytest_sessionstart(session):
    """In CI the official data sits next to the repository: its tests must run, not skip."""
    import os

    if os.environ.get("CI") == "true" and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"CI=true but the official UFT data is missing at {SHARED_DATA}")


class Payload:
    """Unpickling this runs `touch MARKER`: a stand-in for a hostile pickle (the shell command
    of the attack, made harmless). Pickling it stores only the call, so saving runs nothing."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def payload(tmp_path) -> Payload:
    """A hostile object; `payload.marker` exists only if something unpickled it."""
    return Payload(tmp_path / "ran-code")
