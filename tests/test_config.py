"""The run config: every kind of bad input gives one clear error naming the file and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from evolve.config import Config, ConfigError, WorkersConfig, config_from_dict, load_config
from evolve.workers.pool import worker_count

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """A template dir with the harness file and both seed scripts."""
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    for name in ("prepare.py", "train.py", "train_cpu.py"):
        (tpl / name).write_text("# stand-in\n")
    return tpl


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [])
    return str(info.value)


# ---- the shipped configs -----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    saved = tmp_path / "config.yaml"
    saved.write_text(config.to_yaml())
    assert load_config(saved) == config


def test_shipped_configs_say_what_the_issue_asks() -> None:
    demo = load_config(REPO / "configs/default.yaml")
    assert (demo.profile, demo.data, demo.selection.strategy) == (
        "cpu-tiny",
        "synthetic",
        "greedy",  # parallel greedy: the strategy benchmark's pick (benchmarks/RESULTS.md)
    )
    assert [op.kind for op in demo.mutation.operators] == ["heuristic"]
    assert (demo.population.size, demo.population.islands, demo.workers.count) == (1, 1, 2)
    assert demo.mutation.lookahead == 0  # children of the champion of the moment (RESULTS.md)
    assert demo.workers.gpus_per_worker == 0 and demo.budget.max_experiments == 20

    one = load_config(REPO / "configs/one-agent.yaml")
    assert one.selection.strategy == "greedy" and one.population.size == 1
    assert (one.population.islands, one.workers.count, one.mutation.lookahead) == (1, 1, 0)

    gpu = load_config(REPO / "configs/gpu.yaml")
    assert (gpu.profile, gpu.data, gpu.workers.count, gpu.workers.gpus_per_worker) == (
        "gpu-5min",
        "climbmix",
        "auto",
        1,
    )
    kinds = {op.kind: op for op in gpu.mutation.operators}
    assert kinds["llm"].model == "claude-sonnet-5-5" and 0 < kinds["heuristic"].weight < 1
    assert gpu.selection.strategy == "greedy"
    assert (gpu.population.size, gpu.population.islands, gpu.mutation.lookahead) == (1, 1, 1)
    assert (gpu.budget.max_hours, gpu.budget.max_llm_usd) == (12, 50)
    # what a first GPU run should have: noise measured, gains confirmed, effort, fallback
    assert gpu.noise.seeds >= 2 and gpu.confirm.seeds >= 1
    assert kinds["llm"].effort == "high" and kinds["llm"].temperature is None
    assert gpu.mutation.on_llm_down == "fallback"
    assert kinds["repair"].weight == 0  # triggered by crashes, never drawn
    assert gpu.seed_script == "train.py" and demo.seed_script == "train_cpu.py"


# ---- good input ----------------------------------------------------------------------------


def test_minimal_config_gets_defaults_and_its_name_from_the_file(
    tmp_path: Path, template: Path
) -> None:
    config = load_config(write(tmp_path, "template: tpl\n", name="my-run.yaml"))
    assert config.name == "my-run"
    assert config.template == str(template.resolve())
    assert config.mutable_files == ["train.py"] and config.data == "synthetic"
    assert config.mutation.operators[0].kind == "heuristic"


def test_template_resolves_against_the_config_dir_before_the_cwd(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confdir = tmp_path / "confs"
    confdir.mkdir()
    path = write(confdir, "template: tpl\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tpl").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # not found next to the config: the CWD's tpl is used
    assert load_config(path).template == str(template.resolve())
    near = confdir / "tpl"
    near.mkdir()
    for name in ("prepare.py", "train_cpu.py"):
        (near / name).write_text("")
    assert load_config(path).template == str(near.resolve())


def test_text_data_path_is_resolved(tmp_path: Path, template: Path) -> None:
    (tmp_path / "corpus.txt").write_text("hello")
    config = load_config(write(tmp_path, "template: tpl\ndata: text:corpus.txt\n"))
    assert config.data == f"text:{(tmp_path / 'corpus.txt').resolve()}"


def test_greedy_forces_population_one(tmp_path: Path, template: Path) -> None:
    config = load_config(write(tmp_path, "template: tpl\nselection: {strategy: greedy}\n"))
    assert config.population.size == 1


def test_config_is_frozen(tmp_path: Path, template: Path) -> None:
    config = load_config(write(tmp_path, "template: tpl\n"))
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3  # type: ignore[misc]


def test_workers_auto_resolves_from_the_cluster() -> None:
    def resolve(workers: WorkersConfig, *, gpus: float, cpus: float) -> int:
        return worker_count(workers.count, gpus_per_worker=workers.gpus_per_worker,
                            cpus_per_worker=workers.cpus_per_worker,
                            resources={"GPU": gpus, "CPU": cpus})

    assert resolve(WorkersConfig(count="auto", gpus_per_worker=1), gpus=8, cpus=64) == 8
    assert resolve(WorkersConfig(count="auto", gpus_per_worker=2), gpus=8, cpus=64) == 4
    assert resolve(WorkersConfig(count="auto", cpus_per_worker=2), gpus=0, cpus=5) == 2
    assert resolve(WorkersConfig(count=3, gpus_per_worker=1), gpus=8, cpus=64) == 3
    with pytest.raises(ValueError, match="gpus_per_worker"):
        resolve(WorkersConfig(count="auto", gpus_per_worker=1), gpus=0, cpus=8)


def test_config_from_dict_for_programmatic_runs(template: Path) -> None:
    config = config_from_dict({"name": "x", "template": str(template)}, ["seed=7"])
    assert isinstance(config, Config) and config.seed == 7


def test_importing_the_config_pulls_in_neither_ray_nor_torch() -> None:
    code = "import sys, evolve.config; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- bad input: each names the file and the key --------------------------------------------


def test_unknown_top_level_key_lists_the_allowed_keys(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\npopulaton: {size: 3}\n")
    message = error_of(path)
    assert f"{path}:2: populaton: unknown key" in message
    assert "population" in message and "selection" in message


def test_unknown_nested_key_names_the_dotted_key_and_line(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\npopulation:\n  size: 3\n  islnads: 2\n")
    message = error_of(path)
    assert f"{path}:4: population.islnads: unknown key" in message
    assert "size, islands, migration_interval, stagnation_reseed_after" in message


@pytest.mark.parametrize(
    ("yaml_text", "key", "fragment"),
    [
        ("population: {size: four}", "population.size", "valid integer"),
        ("population: {size: 2.5}", "population.size", "valid integer"),
        ("population: {size: true}", "population.size", "valid integer"),
        ("seed: '0'", "seed", "valid integer"),
        ("name: 5", "name", "valid string"),
        ("workers: {count: many}", "workers.count", "'auto' or an integer"),
        ("budget: {max_hours: soon}", "budget.max_hours", "valid number"),
        ("mutation: {operators: {kind: heuristic}}", "mutation.operators", "valid list"),
        ("profile: gpu-1h", "profile", "'cpu-micro', 'cpu-tiny', 'cpu-bench' or 'gpu-5min'"),
        ("selection: {strategy: best}", "selection.strategy", "'greedy', 'tournament', 'rank' or 'random'"),
        ("population: 4", "population", "got 4"),
    ],
)
def test_wrong_type(
    tmp_path: Path, template: Path, yaml_text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, f"template: tpl\n{yaml_text}\n")
    message = error_of(path)
    assert f"{path}:2: {key}: " in message
    assert fragment in message


@pytest.mark.parametrize(
    ("yaml_text", "key", "fragment"),
    [
        ("population: {size: 0}", "population.size", "greater than 0"),
        ("population: {islands: 0}", "population.islands", "greater than 0"),
        (
            "population: {migration_interval: -1}",
            "population.migration_interval",
            "greater than or equal to 0",
        ),
        ("budget: {max_hours: -1}", "budget.max_hours", "greater than 0"),
        ("budget: {max_experiments: 0}", "budget.max_experiments", "greater than 0"),
        ("budget: {max_llm_usd: .inf}", "budget.max_llm_usd", "finite"),
        ("workers: {count: 0}", "workers.count", "'auto' or an integer >= 1"),
        ("workers: {gpus_per_worker: -1}", "workers.gpus_per_worker", "greater than or equal to 0"),
        ("selection: {tournament_size: 0}", "selection.tournament_size", "greater than 0"),
        ("mutation: {lookahead: -1}", "mutation.lookahead", "greater than or equal to 0"),
        ("mutation: {operators: []}", "mutation.operators", "at least 1 item"),
        (
            "mutation: {operators: [{kind: heuristic, weight: 0}]}",
            "mutation.operators",
            "weight > 0",
        ),
        (
            "mutation: {operators: [{kind: heuristic, weight: -1}]}",
            "mutation.operators[0].weight",
            "greater than or equal to 0",
        ),
        (
            "mutation: {operators: [{kind: llm, temperature: 2}]}",
            "mutation.operators[0].temperature",
            "less than or equal to 1",
        ),
        ("mutation: {operators: [{kind: command}]}", "mutation.operators[0].argv", "required"),
        (
            "mutation: {operators: [{kind: command, argv: []}]}",
            "mutation.operators[0].argv",
            "at least 1 item",
        ),
        ("mutable_files: [prepare.py, train.py]", "mutable_files", "fixed harness"),
        ("mutable_files: [model.py]", "mutable_files", "must include train.py"),
        ("mutable_files: [../x.py, train.py]", "mutable_files", "inside the template"),
        ("name: 'my run'", "name", "directory name"),
        ("data: parquet", "data", "synthetic, climbmix, text:<path>"),
        ("data: 'text:nowhere.txt'", "data", "'nowhere.txt' does not exist"),
    ],
)
def test_impossible_value(
    tmp_path: Path, template: Path, yaml_text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, f"template: tpl\n{yaml_text}\n")
    message = error_of(path)
    assert f"{path}:2: {key}: " in message
    assert fragment in message


def test_greedy_with_a_larger_population_is_refused(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\npopulation: {size: 4}\nselection: {strategy: greedy}\n")
    message = error_of(path)
    assert f"{path}:3: selection: " in message and "population.size must be 1" in message


def test_operator_kinds(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\nmutation:\n  operators:\n    - {kind: genetic}\n")
    message = error_of(path)
    assert f"{path}:4: mutation.operators[0]: unknown operator kind 'genetic'" in message
    assert "'heuristic', 'llm', 'crossover', 'command'" in message
    path = write(tmp_path, "template: tpl\nmutation: {operators: [{weight: 1}]}\n")
    assert "mutation.operators[0]: an operator needs a kind" in error_of(path)
    path = write(tmp_path, "template: tpl\nmutation: {operators: [{kind: llm, modle: x}]}\n")
    message = error_of(path)
    assert "mutation.operators[0].modle: unknown key" in message
    assert "model, base_url" in message


@pytest.mark.parametrize(
    ("files", "profile", "missing"),
    [
        (["train.py", "train_cpu.py"], "cpu-tiny", "prepare.py"),
        (["prepare.py", "train.py"], "cpu-micro", "train_cpu.py"),
        (["prepare.py", "train_cpu.py"], "gpu-5min", "train.py"),
    ],
)
def test_template_must_hold_the_harness_and_the_profiles_seed(
    tmp_path: Path, files: list[str], profile: str, missing: str
) -> None:
    (tmp_path / "t").mkdir()
    for name in files:
        (tmp_path / "t" / name).write_text("")
    path = write(tmp_path, f"template: t\nprofile: {profile}\n")
    message = error_of(path)
    assert f"{path}:1: template: " in message and f"has no {missing}" in message


def test_template_that_does_not_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntemplate: no_such_dir\n")
    message = error_of(path)
    assert f"{path}:2: template: 'no_such_dir' is not a directory" in message


def test_missing_template_key(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    assert f"{path}: template: is required but missing" in error_of(path)


def test_several_errors_are_all_reported(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\npopulation: {size: 0}\nprofile: gpu\nseed: -1\n")
    lines = error_of(path).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "population.size" in lines[0] and "profile" in lines[1] and "seed" in lines[2]


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "template: tpl\npopulation:\n  size: 4\n   islands: 2\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4:") and "YAML syntax error" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- template: tpl\n")
    assert error_of(path) == f"{path}: the top level must be a mapping of keys, not a list"


def test_unreadable_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in message and "cannot read" in message


# ---- overrides -------------------------------------------------------------------------------


def test_overrides_set_values_parsed_as_yaml(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\nmutation:\n  operators: [{kind: heuristic}]\n")
    (template / "model.py").write_text("")
    config = load_config(
        path,
        [
            "population.size=16",
            "budget.max_hours=0.5",
            "workers.count=auto",
            "mutation.operators.0.weight=2",
            "mutable_files=[train.py, model.py]",
        ],
    )
    assert config.mutable_files == ["train.py", "model.py"]
    assert config.population.size == 16
    assert config.budget.max_hours == 0.5
    assert config.workers.count == "auto"
    assert config.mutation.operators[0].weight == 2


def test_override_replaces_what_the_file_says(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\nselection: {strategy: greedy}\n")
    config = load_config(path, ["selection.strategy=tournament", "population.size=3"])
    assert config.selection.strategy == "tournament" and config.population.size == 3


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("population.sise=3", "unknown key 'sise' in population; allowed keys: size, islands"),
        ("populaton.size=3", "unknown key 'populaton' in the top level; allowed keys: name"),
        ("seed.value=3", "seed is a value, not a section"),
        ("mutation.operators.3.weight=1", "mutation.operators[3] does not exist"),
        ("mutation.operators.0.modle=x", "unknown key 'modle' in mutation.operators[0]"),
        ("population.size", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
    ],
)
def test_bad_override_path(tmp_path: Path, template: Path, override: str, fragment: str) -> None:
    path = write(tmp_path, "template: tpl\nmutation: {operators: [{kind: heuristic}]}\n")
    message = error_of(path, [override])
    assert message.startswith(f"--set {override!r}: ") and fragment in message


def test_bad_override_value_names_the_override(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, "template: tpl\n")
    message = error_of(path, ["population.size=0"])
    assert f"{path} (--set population.size=0): population.size: " in message
    assert "greater than 0" in message


# ---- duplicate keys, list overrides, paths, text data ------------------------------------


def test_a_duplicate_key_is_an_error_naming_the_file_line_and_key(
    tmp_path: Path, template: Path
) -> None:
    path = write(tmp_path, f"""\
        name: dup
        template: {template}
        population:
          size: 4
          islands: 2
          size: 8
        """)
    message = error_of(path)
    assert f"{path}:6: population.size: duplicate key (first on line 4)" in message


def test_a_duplicate_key_inside_a_list_item_is_caught_too(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, f"""\
        name: dup
        template: {template}
        mutation:
          operators:
            - kind: heuristic
              weight: 1.0
              weight: 2.0
        """)
    assert f"{path}:7: mutation.operators[0].weight: duplicate key" in error_of(path)


def test_a_single_value_sets_a_list_key(tmp_path: Path, template: Path) -> None:
    (template / "model.py").write_text("# stand-in\n")
    path = write(tmp_path, f"name: one\ntemplate: {template}\n")
    assert load_config(path, ["mutable_files=train.py"]).mutable_files == ["train.py"]
    assert load_config(path, ["mutable_files=[train.py, model.py]"]).mutable_files == [
        "train.py", "model.py"]
    # one value that the list then refuses gets the list's own rule, not a type error
    assert "must include train.py" in error_of(path, ["mutable_files=model.py"])


def test_a_list_written_as_a_mapping_shows_the_list_form(tmp_path: Path, template: Path) -> None:
    path = write(tmp_path, f"name: one\ntemplate: {template}\nmutable_files: {{a: b}}\n")
    assert "write a list as [a, b]" in error_of(path)


def test_a_copied_default_config_finds_the_bundled_template(tmp_path: Path) -> None:
    copy = tmp_path / "r1.yaml"
    copy.write_text((REPO / "configs" / "default.yaml").read_text())
    outside = subprocess.run(
        [sys.executable, "-c", f"from evolve.config import load_config; "
                               f"print(load_config({str(copy)!r}).template)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.strip() == str(REPO / "train_template")


def test_a_missing_relative_template_says_where_it_looked_and_how_to_fix_it(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "name: x\ntemplate: ../train_template\n")
    message = error_of(path)
    assert f"next to the config file ({tmp_path.parent / 'train_template'})" in message
    assert "then in the working directory" in message
    assert "absolute path" in message and "template: builtin" in message


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d.mkdir(), "is an empty folder"),
        (lambda d: (d.mkdir(), (d / "a.txt").write_text("\n  \n")), "holds no text"),
        (lambda d: d.write_text(""), "is an empty file"),
    ],
    ids=["empty-folder", "blank-files", "empty-file"],
)
def test_text_data_without_text_is_refused_at_validation(
    tmp_path: Path, template: Path, make, fragment: str
) -> None:
    target = tmp_path / "corpus"
    make(target)
    path = write(tmp_path, f"name: x\ntemplate: {template}\n")
    message = error_of(path, [f"data=text:{target}"])
    assert f"data: text:{target} {fragment}" in message


def test_text_data_with_text_in_a_subfolder_is_accepted(tmp_path: Path, template: Path) -> None:
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "empty.txt").write_text("")
    (tmp_path / "corpus" / "sub" / "a.txt").write_text("some words\n")
    path = write(tmp_path, f"name: x\ntemplate: {template}\ndata: text:corpus\n")
    assert load_config(path).data == f"text:{tmp_path / 'corpus'}"
