"""Coverage-guided fuzzing of the parser entry point with atheris, for a fixed time.

Why next to the hypothesis properties (tests/hostile/test_parse_properties.py):
hypothesis mutates along lines we thought of; libFuzzer follows branch
coverage into the ones we did not. The contract is the same: for any bytes,
``dmarclens.parse.report.parse_payload`` returns a ParsedItem or raises
ReportParseError, within the memory bound of the hostile-input suite.

CI-optional (atheris is a compiled extension, not a dependency):

    pip install atheris
    python benchmarks/fuzz_parse.py --seconds 120            # fixed budget, then exit 0
    python benchmarks/fuzz_parse.py --seconds 600 --corpus benchmarks/.data/fuzz-corpus

A crash (any other exception, a hang over --timeout, or RSS over --rss-mb)
stops the run with libFuzzer's report and writes the input to --crashes;
turn it into a case in tests/hostile/cases.py, fix, and keep it there.
Without atheris the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import sys
import tempfile
from pathlib import Path


def seed_corpus(folder: Path) -> int:
    """Valid reports in every wrapper plus the small hostile cases: the fuzzer starts from real shapes."""
    from dmarclens.generator import zip_bytes
    from tests.hostile.cases import CASES, xml

    folder.mkdir(parents=True, exist_ok=True)
    seeds = {
        "daily.xml": xml("fz-daily"),
        "multiday.xml": xml("fz-multi", span=3 * 86400),
        "daily.xml.gz": gzip.compress(xml("fz-gz"), mtime=0),
        "daily.zip": zip_bytes("r.xml", xml("fz-zip")),
    }
    for case in CASES:
        if case.sparse_size or case.mail:
            continue
        data = case.build(folder)
        if len(data) <= 64 * 1024:  # bombs and 100 MB nodes are covered by the suite, not mutated here
            seeds[case.name] = data
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return len(seeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time (default 60)")
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: a fresh temp folder)")
    parser.add_argument("--crashes", type=Path, default=Path("benchmarks/.data/fuzz-crashes"),
                        help="where crashing inputs are written")
    parser.add_argument("--timeout", type=int, default=20, help="seconds one input may take")
    parser.add_argument("--rss-mb", type=int, default=1024, help="memory limit per process, MB")
    parser.add_argument("--max-len", type=int, default=65536, help="largest input libFuzzer generates")
    args = parser.parse_args(argv)

    try:
        import atheris
    except ImportError:
        print("fuzz_parse: atheris is not installed (pip install atheris); skipped", file=sys.stderr)
        return 0

    # Instrument before anything imports dmarclens (the seed corpus does): only modules
    # imported inside this block report coverage to libFuzzer.
    with atheris.instrument_imports(include=["dmarclens"]):
        from dmarclens.core.errors import ReportParseError
        from dmarclens.parse.report import parse_payload

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))  # the seed corpus comes from tests/hostile/cases.py
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="dmarclens-fuzz-"))
    n = seed_corpus(corpus)
    args.crashes.mkdir(parents=True, exist_ok=True)

    def one_input(data: bytes) -> None:
        with contextlib.suppress(ReportParseError):
            parse_payload(data)

    print(f"fuzz_parse: {n} seeds in {corpus}, {args.seconds} s budget, crashes to {args.crashes}", file=sys.stderr)
    atheris.Setup(
        [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
         f"-rss_limit_mb={args.rss_mb}", f"-max_len={args.max_len}", f"-artifact_prefix={args.crashes}/",
         "-print_final_stats=1"],
        one_input,
    )
    atheris.Fuzz()  # exits the process: 0 when the budget ran out, non-zero on a crash
    return 0


if __name__ == "__main__":
    sys.exit(main())
