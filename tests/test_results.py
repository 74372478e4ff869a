"""durable_nb.results: a run's steps as a tidy DataFrame, arguments and results as columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import durable_nb
from durable_nb.engine.identity import open_run

FIXED = ["seq", "activity", "status", "attempts", "duration_s"]


def sweep(name: str, lrs: list[float]) -> str:
    """A finished run of ``name``: one ``train`` step per learning rate."""

    @durable_nb.activity
    def train(cfg: dict, seed: int = 0) -> dict:
        return {"loss": round(cfg["lr"] * 10 + seed, 3), "epochs": cfg["depth"] * 2}

    ctx = open_run(name)
    ctx.execute(lambda: [train({"lr": lr, "depth": i + 1}, seed=i) for i, lr in enumerate(lrs)])
    return ctx.run_id


def test_dict_arguments_and_results_become_numeric_columns(journal_home: Path):
    sweep("sweep", [0.3, 0.1, 0.2])
    df = durable_nb.results("sweep")
    assert list(df.columns) == [*FIXED, "cfg.lr", "cfg.depth", "seed", "loss", "epochs"]
    assert list(df.seq) == [0, 1, 2] and set(df.activity) == {"train"}
    assert set(df.status) == {"completed"} and list(df.attempts) == [1, 1, 1]
    for column in ("cfg.lr", "loss", "duration_s"):
        assert pd.api.types.is_float_dtype(df[column]), column
    for column in ("seq", "attempts", "cfg.depth", "seed", "epochs"):
        assert pd.api.types.is_integer_dtype(df[column]), column
    best = df.sort_values("loss")
    assert list(best["cfg.lr"]) == [0.1, 0.3, 0.2]
    assert list(best.loss) == [2.0, 3.0, 4.0]


def test_the_latest_run_of_a_workflow_by_default_and_a_run_id_picks_one(journal_home: Path):
    first = sweep("sweep", [0.1])
    second = open_run("sweep", new=True)
    second.execute(lambda: None)
    latest = durable_nb.results("sweep")
    assert latest.attrs["run_id"] == second.run_id and latest.empty
    assert list(latest.columns) == FIXED
    for older in (durable_nb.results(first), durable_nb.results(run_id=first),
                  durable_nb.results("sweep", run_id=first)):
        assert older.attrs["run_id"] == first and list(older.loss) == [1.0]
    with pytest.raises(ValueError, match=f"run '{first}' is a run of workflow 'sweep', not "
                                         "of 'other'"):
        durable_nb.results("other", run_id=first)


def test_nested_configs_flatten_to_dotted_columns(journal_home: Path):
    @durable_nb.activity
    def fit(cfg: dict) -> dict:
        return {"metrics": {"loss": cfg["opt"]["lr"] * 2, "ok": True}}

    ctx = open_run("nested")
    ctx.execute(lambda: [fit({"opt": {"lr": lr, "name": "adam"}, "layers": [8, 4]})
                         for lr in (0.5, 0.25)])
    df = durable_nb.results("nested")
    assert list(df.columns) == [*FIXED, "cfg.opt.lr", "cfg.opt.name", "cfg.layers",
                                "metrics.loss", "metrics.ok"]
    assert list(df["cfg.opt.lr"]) == [0.5, 0.25] and list(df["metrics.loss"]) == [1.0, 0.5]
    assert list(df["cfg.opt.name"]) == ["adam", "adam"]
    assert list(df["cfg.layers"]) == [[8, 4], [8, 4]]
    assert pd.api.types.is_bool_dtype(df["metrics.ok"])


def test_a_result_that_is_not_a_dict_is_the_result_column(journal_home: Path):
    @durable_nb.activity
    def square(x: int) -> int:
        return x * x

    ctx = open_run("squares")
    ctx.execute(lambda: [square(x) for x in (3, 1, 2)])
    df = durable_nb.results("squares")
    assert list(df.columns) == [*FIXED, "x", "result"]
    assert pd.api.types.is_integer_dtype(df.result)
    assert list(df.sort_values("result").x) == [1, 2, 3]


def test_result_fields_named_like_an_argument_or_a_fixed_column_get_a_prefix(
        journal_home: Path):
    @durable_nb.activity
    def echo(x: int, seq: int) -> dict:
        return {"x": x + 1, "status": "fine", "y": 0}

    ctx = open_run("clash")
    ctx.execute(lambda: echo(1, seq=7))
    df = durable_nb.results("clash")
    assert list(df.columns) == [*FIXED, "x", "args.seq", "result.x", "result.status", "y"]
    row = df.iloc[0]
    assert (row.seq, row["args.seq"], row.x, row["result.x"]) == (0, 7, 1, 2)
    assert (row.status, row["result.status"]) == ("completed", "fine")


def test_pickled_values_show_their_preview_without_unpickling(journal_home: Path):
    @durable_nb.activity
    def tags(labels: set, n: int) -> Any:
        return frozenset(labels)

    ctx = open_run("pickled")
    ctx.execute(lambda: tags({"b"}, 2))
    df = durable_nb.results("pickled")
    # One pickled argument makes the record of all of them pickled: its preview, whole.
    assert list(df.columns) == [*FIXED, "args", "result"]
    assert df.args[0] == "{'labels': {'b'}, 'n': 2}"
    assert df.result[0] == "frozenset({'b'})"


def test_a_failed_step_is_a_row_with_its_arguments_and_no_result(journal_home: Path):
    @durable_nb.activity
    def train(lr: float) -> dict:
        if lr > 1:
            raise ValueError(f"lr {lr} diverges")
        return {"loss": lr / 2}

    ctx = open_run("failing")
    with pytest.raises(durable_nb.ActivityFailed):
        ctx.execute(lambda: [train(lr) for lr in (0.5, 0.25, 2.0)])
    df = durable_nb.results("failing")
    assert list(df.columns) == [*FIXED, "lr", "loss"]
    assert list(df.status) == ["completed", "completed", "failed"]
    failed = df.iloc[2]
    assert failed.lr == 2.0 and pd.isna(failed.loss) and failed.attempts == 1
    assert pd.api.types.is_float_dtype(df.loss)
    assert list(df.sort_values("loss").lr) == [0.25, 0.5, 2.0]


def test_an_unknown_workflow_or_run_names_it_and_how_to_list_runs(journal_home: Path):
    sweep("sweep", [0.1])
    with pytest.raises(durable_nb.RunNotFound, match="no workflow or run named 'sweeep'") as e:
        durable_nb.results("sweeep")
    assert "durable_nb.runs()" in str(e.value) and "durable-nb runs" in str(e.value)
    with pytest.raises(durable_nb.RunNotFound, match="no run 'sweep-9'"):
        durable_nb.results(run_id="sweep-9")
    with pytest.raises(TypeError, match="needs a workflow name or a run id"):
        durable_nb.results()
