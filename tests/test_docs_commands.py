"""Every command the docs print, and every override the code's messages suggest, works when pasted into bash.

A command is a fenced ``bash``/``sh`` block (or an unlabelled block whose first line is a command) of README.md
or docs/*.md, or an inline code span that starts like a command (``rlvr-``, ``make``, ``python``, ...). Each runs
in a real bash (its own word splitting, quotes, brace expansion, ``$(...)``, loops) with PATH holding only fake
executables that record their arguments; then the recorded arguments go through what the real program would do
with them first: rlvr-train's overrides through the unknown-key check, Hydra's composition with the typed schema
and `rlvr.config.validate` (`rlvr.train.compose`, nothing trains), and every other CLI through its argparse
parser. What cannot run here says so in the doc, just before the block or paragraph:

    <!-- docs-test: no-validate (why) -->   composed against the schema, not validated (a GPU model path, ...)
    <!-- docs-test: parse-only (why) -->    overrides parsed and their keys checked, not composed (a plugin)
    <!-- docs-test: refused (why) -->       shown to fail: rlvr-train must refuse it (ConfigError, exit 2)
    <!-- docs-test: skip (why) -->          not run (a synopsis: placeholders such as RUN_DIR or <repo>)
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIXES = ("rlvr-", "make ", "make", "accelerate ", "python ", ".venv/", "PYTHONPATH=", "torchrun ")
MARKER = re.compile(r"<!--\s*docs-test:\s*(no-validate|parse-only|refused|skip)\s*\((.+?)\)\s*-->")
# fake executables: each records its argv; `srun` runs its command, `which` names the fake
RECORDING = ["rlvr-train", "rlvr-report", "rlvr-eval", "rlvr-export", "rlvr-rollout-server", "accelerate",
             "torchrun", "make", "python", "git", "pip", "sbatch"]  # fmt: skip
IGNORED = {"git", "pip", "sbatch"}  # not ours: recorded, not checked
MENTIONS = {"accelerate launch", "python -m"}  # a tool named in a sentence


@dataclass
class Snippet:
    doc: str
    line: int
    text: str
    mode: str = "run"  # run | no-validate | parse-only | refused | skip
    why: str = ""

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Call:
    prog: str
    args: list[str] = field(default_factory=list)


def _is_command(text: str) -> bool:
    """A command, not a program's name in a sentence (`rlvr-report` alone) nor a message it prints."""
    text = text.strip()
    return (
        text.startswith(PREFIXES)
        and " " in text
        and text not in MENTIONS
        and not text.startswith("rlvr-train:")
    )


def doc_snippets(path: Path) -> list[Snippet]:
    """The commands of one markdown file, each with the marker that precedes its block or paragraph."""
    lines, out, i = path.read_text().splitlines(), [], 0
    mode, why = "run", ""
    name = str(path.relative_to(ROOT))
    while i < len(lines):
        line = lines[i]
        marker = MARKER.search(line)
        if marker:
            mode, why = marker.group(1), marker.group(2)
            i += 1
            continue
        if line.startswith("```"):
            lang = line[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = lines[i + 1 : end]
            first = next((b.strip() for b in body if b.strip() and not b.startswith("#")), "")
            if lang in ("bash", "sh", "shell") or (lang == "" and _is_command(first)):
                out.append(Snippet(name, i + 2, "\n".join(body), mode, why))
            mode, why, i = "run", "", end + 1
            continue
        if not line.strip():
            mode, why, i = "run", "", i + 1
            continue
        start = i  # a paragraph: inline code may span its lines
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("```"):
            i += 1
        text = " ".join(lines[start:i])
        inside = MARKER.search(text)  # a marker within a paragraph (a list item's) covers that paragraph
        if inside:
            mode, why = inside.group(1), inside.group(2)
        for span in re.findall(r"`([^`]+)`", text):
            if _is_command(span):  # a program's name alone is a mention, not a command
                out.append(Snippet(name, start + 1, span, mode, why))
        mode, why = "run", ""
    return out


def all_snippets() -> list[Snippet]:
    return [s for doc in DOCS for s in doc_snippets(doc)]


@pytest.fixture(scope="module")
def fake_shell(tmp_path_factory):
    """A directory whose bin/ holds the fake executables, and a cwd with the repo-relative ones."""
    home = tmp_path_factory.mktemp("docs_shell")
    record = '#!/bin/bash\n{ printf "%s\\0" "$0" "$@"; printf "\\1"; } >> "$DOCS_TEST_LOG"\n'
    for rel in [*(f"bin/{n}" for n in RECORDING), ".venv/bin/python", "benchmarks/gpu_learner.sh"]:
        exe = home / rel
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text(record)
        exe.chmod(0o755)
    for name, script in {"srun": 'exec "$@"', "bash": 'exec /bin/bash "$@"', "which": 'command -v "$1"',
                         "mktemp": "echo /tmp/docs-test-tmp", "scontrol": "echo node1",
                         "head": 'exec /usr/bin/head "$@"'}.items():  # fmt: skip
        (home / "bin" / name).write_text(f"#!/bin/bash\n{script}\n")
        (home / "bin" / name).chmod(0o755)
    return home


def bash_calls(text: str, home: Path) -> list[Call]:
    """Run `text` in bash with only the fakes on PATH; the calls they recorded. bash's stderr (a command not
    found, a syntax error, a redirection from a placeholder) fails the snippet."""
    log = home / "calls.log"
    log.write_bytes(b"")
    env = {"PATH": str(home / "bin"), "DOCS_TEST_LOG": str(log), "HOME": str(home), "LC_ALL": "C.UTF-8"}
    for var in set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text)):  # $NODE_RANK, $SLURM_NNODES, ...
        env.setdefault(var, "1")
    res = subprocess.run(["/bin/bash", "--noprofile", "--norc", "-c", text], cwd=home, env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 0 and not res.stderr, f"bash: {res.stderr.strip()}"
    calls = []
    for record in log.read_bytes().split(b"\1")[:-1]:
        argv = [a.decode() for a in record.split(b"\0")[:-1]]
        prog = os.path.relpath(argv[0], home) if argv[0].startswith(str(home)) else argv[0]
        calls.append(Call(prog.removeprefix("bin/"), argv[1:]))
    return calls


# -- what each program does with its arguments first ---------------------------------------------------------


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Jobs of `rlvr-train -m OVERRIDES` that together use every value of every comma list (Hydra's basic
    sweeper runs their product; each value composes on its own, so a diagonal covers them in fewer jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            key = ("+" if o.type.name == "ADD" else "") + o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    width = max(len(c) for c in choices)
    return [[c[i % len(c)] for c in choices] for i in range(width)]


def check_rlvr_train(args: list[str], mode: str) -> None:
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlvr import overrides as overrides_mod
    from rlvr.train import CONFIG_DIR, compose

    hydra_args = get_args_parser().parse_args(args)
    overrides = hydra_args.overrides
    OverridesParser.create().parse_overrides(overrides)  # Hydra's lexer and grammar
    overrides_mod.check(overrides, CONFIG_DIR)
    if mode == "parse-only":
        return
    jobs = _sweep_jobs(overrides) if hydra_args.multirun and overrides else [overrides]
    for job in jobs:
        compose(job, check=mode == "run")


def _load(path: Path):
    sys.path.insert(0, str(path.parent))  # benchmarks import their neighbours
    try:
        name = f"_docs_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def parse_with(parser, args: list[str]) -> None:
    """argparse's verdict, its message kept (parse errors exit 2)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(args)
        except SystemExit as e:
            if e.code:
                raise AssertionError(f"{parser.prog}: {err.getvalue().strip()}") from None


def check_python(args: list[str], mode: str) -> None:
    if args[:2] == ["-m", "rlvr.train"]:
        return check_rlvr_train(args[2:], mode)
    if args[:2] == ["-m", "pytest"]:
        return None
    script = ROOT / args[0]
    assert script.is_file(), f"no such script: {args[0]}"
    parse_with(_load(script).build_parser(), args[1:])


def check_launcher(prog: str, args: list[str], mode: str) -> None:
    """accelerate launch / torchrun: their own parser, the config file, then the training command's."""
    if prog == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        assert args[0] == "launch", f"accelerate {args[0]}: only `launch` is checked"
        ns = launch_command_parser().parse_args(args[1:])
        assert ns.config_file is None or (ROOT / ns.config_file).is_file(), f"no file {ns.config_file}"
        module = ns.module
    else:
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(args)
        module = ns.module
    script, rest = ns.training_script, ns.training_script_args
    if (module and script == "rlvr.train") or Path(script).name == "rlvr-train":
        return check_rlvr_train(rest, mode)
    raise AssertionError(f"{prog} launches {script}: not a command this test knows")


def check_make(args: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    for a in args:
        if "=" in a:
            var = a.split("=", 1)[0]
            assert re.search(rf"^{var} \?=", makefile, re.M), f"make: no variable {var} in the Makefile"
        else:
            assert a in targets, f"make: no target {a}"


def check_call(call: Call, mode: str) -> None:
    prog, args = call.prog, call.args
    if prog == "rlvr-train":
        check_rlvr_train(args, mode)
    elif prog in ("python", ".venv/bin/python"):
        check_python(args, mode)
    elif prog in ("accelerate", "torchrun"):
        check_launcher(prog, args, mode)
    elif prog == "make":
        check_make(args)
    elif prog == "benchmarks/gpu_learner.sh":  # its arguments go on to learner_throughput.py
        parse_with(_load(ROOT / "benchmarks/learner_throughput.py").build_parser(), args)
    elif prog.startswith("rlvr-"):
        module = {"rlvr-rollout-server": "rollout_server"}.get(prog, prog.removeprefix("rlvr-"))
        parser = importlib.import_module(f"rlvr.cli.{module}").build_parser()
        if prog == "rlvr-rollout-server":  # flags it does not know go on to `vllm serve`
            parser.parse_known_args(args)
        else:
            parse_with(parser, args)
    else:
        assert prog in IGNORED, f"{prog}: a command this test does not know (add it)"


SNIPPETS = all_snippets()


def test_the_docs_have_commands_to_check():
    docs = {s.doc for s in SNIPPETS}
    assert {"README.md", "docs/SCALE_OUT.md", "docs/REWARDS.md", "docs/PERFORMANCE.md"} <= docs
    assert sum(s.mode == "run" for s in SNIPPETS) >= 20


# a `skip` marker spares a synopsis alone: a snippet under it with no placeholder a person replaces (a
# capitalised word such as RUN_DIR, `[...]` or `<...>`) is checked like any other
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{2,}\b|\[[^\]=]*\]|<[^>]+>")


def unrun(snippet) -> bool:
    return snippet.mode == "skip" and bool(PLACEHOLDER.search(snippet.text))


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if not unrun(s)], ids=str)
def test_documented_command_works_when_pasted(snippet, fake_shell, monkeypatch):
    mode = "run" if snippet.mode == "skip" else snippet.mode
    monkeypatch.chdir(ROOT)  # documented paths are relative to the checkout
    calls = bash_calls(snippet.text, fake_shell)
    assert calls, f"{snippet}: no command ran"
    for call in calls:
        if mode == "refused":
            from rlvr.errors import ConfigError

            with pytest.raises(ConfigError):
                check_call(call, "run")
            continue
        try:
            check_call(call, mode)
        except Exception as e:
            raise AssertionError(f"{snippet}: `{snippet.text}` -> {call.prog} {call.args}: {e}") from e


# -- the hints the code prints -------------------------------------------------------------------------------

SECTIONS = (
    "model",
    "data",
    "algo",
    "rollout",
    "reward",
    "optim",
    "learner",
    "trainer",
    "eval",
    "logger",
    "monitor",
)
HINT = re.compile(r"(['\"]?)\+{0,2}(?:" + "|".join(SECTIONS) + r")(?:\.\w+)+=")


def _bash_word(text: str, start: int) -> tuple[str, bool]:
    """The bash word at `start` (quotes kept), and whether it ran to the end of `text` unfinished."""
    quote, i = None, start
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c.isspace():
            break
        i += 1
    word = text[start:i]
    if quote is None:
        word = word.rstrip(".,;:)`")
    return word, i == len(text)


def printed_hints() -> list[tuple[str, str, bool]]:
    """(where, bash text, complete) for every `key=value` a string in rlvr/ suggests, as `rlvr-train -m WORD`
    where the line says `-m`; complete is false where the value is filled in at run time (an f-string, a %s),
    whose key alone is checked."""
    out = []
    for path in sorted((ROOT / "rlvr").rglob("*.py")):
        tree = ast.parse(path.read_text())
        in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = node.values
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstrings
            ):
                parts = [node]
            else:
                continue
            for n, part in enumerate(parts):
                if not isinstance(part, ast.Constant):
                    continue
                for m in HINT.finditer(part.value):
                    word, at_end = _bash_word(part.value, m.start())
                    complete = not (at_end and n + 1 < len(parts)) and not re.search(r"%[sdrgf]", word)
                    line = part.value[: m.start()].rsplit("\n", 1)[-1]
                    sweep = "-m " if re.search(r"(^|\s)(-m|--multirun)\s", line) else ""
                    out.append((f"{path.relative_to(ROOT)}:{part.lineno}", sweep + word, complete))
    return out


HINTS = printed_hints()


def test_hints_are_found():
    words = [w for _, w, _ in HINTS]
    assert "'data.answer_pattern=\"####\\s*(.+)$\"'" in words, words
    assert len(HINTS) >= 20


@pytest.mark.parametrize(("where", "text", "complete"), HINTS, ids=[f"{w}:{h}" for w, h, _ in HINTS])
def test_printed_hint_works_when_pasted(where, text, complete, fake_shell, monkeypatch):
    monkeypatch.chdir(ROOT)
    [call] = bash_calls(f"rlvr-train {text}", fake_shell)
    *flags, override = call.args  # one word in bash, as printed
    if not complete:
        from rlvr import overrides as overrides_mod
        from rlvr.train import CONFIG_DIR

        return overrides_mod.check([override.split("=", 1)[0] + "=1"], CONFIG_DIR)
    check_rlvr_train([*flags, override], "no-validate")  # a hint alone need not make a valid run


def test_an_unquoted_example_goes_red(fake_shell, monkeypatch):
    """The mutation the docs test exists for: the reward example without its single quotes is split by bash's
    brace expansion into several arguments, and the check refuses it (issue 25, item 3)."""
    monkeypatch.chdir(ROOT)
    [quoted] = [s for s in SNIPPETS if s.doc == "docs/REWARDS.md" and "reward_functions.py:concise" in s.text]
    line = next(t for t in quoted.text.splitlines() if "reward_functions.py:concise" in t)
    check_call(bash_calls(line, fake_shell)[0], "run")  # as documented: passes
    [call] = bash_calls(line.replace("'", ""), fake_shell)
    assert len(call.args) > 1  # brace expansion made several words of one override
    from hydra.errors import HydraException

    from rlvr.errors import ConfigError

    with pytest.raises((HydraException, ConfigError)):
        check_call(call, "run")
