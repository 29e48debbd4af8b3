"""The README's code examples run as written."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sam2_scale.config import load_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def python_block_after(heading):
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_objective_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(python_block_after("## The training objective"), namespace)
    losses = namespace["losses"]
    assert set(losses) == {"loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"}
    assert namespace["scheduler"].state_dict() == {"step_count": 1}


def test_data_preparation_commands_run(tmp_path, monkeypatch):
    """The README's data-prep commands, with data/ redirected to a temp folder."""
    section = README.split("## Data preparation", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("python ")]
    assert len(commands) == 5
    for command in commands:
        args = shlex.split(command.replace("data/", f"{tmp_path}/data/").replace("data/shards/*", "data/shards/sav"))
        if args[1] == "data_prep/verify_shards.py":
            args[2:] = sorted(str(p) for p in (tmp_path / "data/shards").iterdir())
        result = subprocess.run([sys.executable, str(ROOT / args[1]), *args[2:]], capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert "OK" in result.stdout and "problem" not in result.stdout


def test_input_pipeline_example_constructs(tmp_path):
    """The pipeline example builds its config and loader as written (paths are placeholders)."""
    code = python_block_after("## Input pipeline").split("for batch in loader:")[0]
    namespace = {}
    exec(code, namespace)
    loader = namespace["loader"]
    assert [d.name for d in loader.cfg.datasets] == ["sa1b", "sav"] and loader.steps_per_epoch == 1000


# -- every command in the README's shell blocks names files, options and config keys that exist --

NOT_OURS = {"tail", "ln", "mkdir", "wandb", "tar", "cd", "git", "pip", "nvidia-smi", "scancel", "squeue"}


def shell_commands():
    """(line, argv) of every command line in the README's ```bash blocks, env assignments dropped."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#") or "<" in line:
                continue
            argv = shlex.split(line)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv.pop(0)
            if argv and argv[0] not in NOT_OURS:
                yield line, argv


def help_text(argv):
    result = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(argv)} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def launcher_config(script):
    return re.search(r"CONFIG=\$\{CONFIG:-(\S+)\}", (ROOT / script).read_text()).group(1)


def check_python(argv, helps):
    """argv after `python`: a script (with a subcommand) or `-m module`; options must be in its --help."""
    if argv[0] == "-m":
        target, rest = argv[:2], argv[2:]
        module_path = ROOT / (argv[1].replace(".", "/"))
        assert module_path.with_suffix(".py").exists() or (module_path / "__main__.py").exists(), argv[1]
    else:
        assert (ROOT / argv[0]).exists(), argv[0]
        target, rest = argv[:1], argv[1:]
        if rest and not rest[0].startswith("-") and "/" not in rest[0]:  # a subcommand
            target, rest = target + rest[:1], rest[1:]
    key = tuple(target)
    if key not in helps:
        helps[key] = help_text(target)
    for token in rest:
        if token.startswith("--"):
            assert re.search(rf"{re.escape(token.split('=')[0])}\b", helps[key]), (
                f"{token} is not an option of {' '.join(target)}"
            )
    overrides = [t for t in rest if re.fullmatch(r"[a-z_]+\.[a-z_.]+=.*", t)]
    if "--config" in rest:
        load_config(ROOT / rest[rest.index("--config") + 1], overrides)


@pytest.mark.slow  # a --help subprocess per command
def test_readme_commands_name_what_exists():
    makefile = (ROOT / "Makefile").read_text()
    helps, checked = {}, 0
    for line, argv in shell_commands():
        if argv[0] == "make":
            for target in [a for a in argv[1:] if "=" not in a]:
                assert re.search(rf"^{target}:", makefile, re.M), f"README: no make target {target!r} ({line})"
        elif argv[1:3] == ["-m", "sam2_scale.train.torchrun"]:  # torchrun's options, then `-m` and the script's
            script_at = argv.index("-m", 3)
            check_python(argv[1:script_at], helps)
            check_python(argv[script_at:], helps)
        elif argv[0] in ("python", "python3"):
            check_python(argv[1:], helps)
        elif argv[0] in ("torchrun", "srun"):
            python_at = next(i for i, a in enumerate(argv) if a in ("python", "-m"))
            check_python(argv[python_at + (1 if argv[python_at] == "python" else 0) :], helps)
        elif argv[0] == "sbatch":
            script = next(a for a in argv if a.startswith("launch/"))
            assert (ROOT / script).exists(), script
            rest = argv[argv.index(script) + 1 :]
            if script == "launch/make_shards.sh":
                check_python(["data_prep/make_shards.py", *rest], helps)
            else:
                load_config(ROOT / launcher_config(script), rest)  # overrides after the script are config keys
        else:
            raise AssertionError(f"README command not checked by this test: {line}")
        checked += 1
    assert checked >= 20


def test_readme_paths_exist():
    """Every repository path the README names in backticks exists."""
    paths = set(re.findall(r"`((?:sam2_scale|data_prep|launch|configs|ds_configs|benchmarks|tests|docs)/[\w./-]*\w)", README))
    missing = [p for p in sorted(paths) if not (ROOT / p).exists() and "*" not in p]
    assert not missing, f"README names paths that do not exist: {missing}"


def test_architecture_names_the_files_as_they_are():
    """docs/ARCHITECTURE.md: every backticked path, and every module its layout lists under a
    package of sam2_scale/, exists."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text()
    named = re.findall(r"`((?:sam2_scale|data_prep|launch|configs|ds_configs|benchmarks|tests|docs)/[\w./-]*\w)", text)
    named += ["sam2_scale/" + p for p in re.findall(r"`((?:model|objective|data|prep|train|eval)/[\w./-]*\w)`", text)]
    layout = text.split("## Proposed layout", 1)[1].split("```")[1]
    package = None
    for line in layout.splitlines():
        heading = re.match(r"  (model|objective|data|prep|train|eval)/\s", line)
        if heading:
            package = heading.group(1)
        elif not line.startswith(" " * 24):
            package = None
        if package:
            named += [f"sam2_scale/{package}/{name}" for name in re.findall(r"\b(\w+\.py)\b", line)]
    missing = sorted({p for p in named if not (ROOT / p).exists() and "*" not in p})
    assert len(named) > 40 and not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"
