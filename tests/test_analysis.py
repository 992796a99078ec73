"""The analysis tables are pure functions: checked here on hand-made tidy frames."""

import math
import os

import pandas as pd
import pytest
from scipy import stats

from study.analysis import against_report, best_trials, compute, effects, mean_ci, per_variant
from study.analysis.summary import load_reference


def tidy(
    trials: list[tuple[str, int, list[float]]], epochs: int = 3, experiment: str = "exp", baseline: str = "a"
) -> pd.DataFrame:
    """Rows per (variant, seed, test_acc per epoch); train accuracy in eval mode = test_acc + 0.1,
    the running (augmented) train_acc = test_acc + 0.05, val_acc = test_acc + 0.01 (the metric)."""
    rows = []
    for i, (variant, seed, accs) in enumerate(trials):
        for e, acc in enumerate(accs, start=1):
            rows.append(
                {
                    "experiment": experiment,
                    "trial_id": f"t{i}",
                    "variant": variant,
                    "baseline": baseline,
                    "config_seed": seed,
                    "config_epochs": epochs,
                    "max_t": epochs,
                    "epoch": e,
                    "test_acc": acc,
                    "val_acc": acc + 0.01,
                    "metric": "val_acc",
                    "mode": "max",
                    "train_acc": acc + 0.05,
                    "train_eval_acc": acc + 0.1,
                    "config_dataset": "cifar100",
                    "config_channels": 128,
                    "train_loss": 1.0 / e,
                    "diverged": False,
                    "status": "TERMINATED",
                    "time_total_s": 2.0 * e,
                    "timestamp": 1000 + 10 * i + 2 * e,
                    "images_per_s": 100.0,
                }
            )
    return pd.DataFrame(rows)


FRAME = tidy(
    [
        ("a", 0, [0.1, 0.2, 0.30]),
        ("a", 1, [0.1, 0.2, 0.32]),
        ("a", 2, [0.1, 0.2, 0.31]),
        ("b", 0, [0.2, 0.4, 0.50]),
        ("b", 1, [0.2, 0.4, 0.52]),
        ("b", 2, [0.2, 0.4]),  # b/2 stopped early
    ]
)


def test_mean_ci_is_student_t():
    mean, std, low, high = mean_ci([0.30, 0.32, 0.31])
    assert mean == pytest.approx(0.31) and std == pytest.approx(0.01)
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert (low, high) == pytest.approx((0.31 - half, 0.31 + half))
    assert math.isnan(mean_ci([0.5])[2])


def test_per_variant_takes_each_mean_at_one_budget_and_counts_early_stops_beside_it():
    t = per_variant(FRAME).set_index("variant")
    assert t.loc["a", "trials"] == 3 and t.loc["a", "seeds"] == 3 and t.loc["a", "at_epoch"] == 3
    assert t.loc["a", "test_acc"] == pytest.approx(0.31) and t.loc["a", "stopped_before"] == ""
    # b/2 stopped at epoch 2: beside the mean, never in it (its 0.4 would mix two budgets).
    assert t.loc["b", "at_epoch"] == 3 and t.loc["b", "n"] == 2 and t.loc["b", "stopped_before"] == "1 (at 2)"
    assert t.loc["b", "test_acc"] == pytest.approx((0.50 + 0.52) / 2)
    assert t.loc["a", "train_test_gap"] == pytest.approx(0.1)  # from the eval-mode train accuracy


def test_the_chosen_epoch_reads_the_metric_never_the_test_set():
    """val_acc peaks at epoch 2, test_acc at epoch 3: the table reports test_acc at epoch 2. Shuffling
    the test numbers moves no choice."""
    frame = tidy([("a", s, [0.1, 0.2, 0.3]) for s in range(3)])
    frame["val_acc"] = frame["epoch"].map({1: 0.5, 2: 0.9, 3: 0.7})
    t = per_variant(frame).set_index("variant")
    assert t.loc["a", "selected_on"] == "val_acc" and t.loc["a", "selected_epoch"] == 2
    assert t.loc["a", "selected_test_acc"] == pytest.approx(0.2) and t.loc["a", "test_acc"] == pytest.approx(0.3)
    shuffled = frame.assign(test_acc=frame["test_acc"].sample(frac=1, random_state=0).to_numpy())
    assert per_variant(shuffled).set_index("variant").loc["a", "selected_epoch"] == 2
    best = best_trials(frame.assign(val_acc=frame["val_acc"] + 0.01 * frame["config_seed"]))
    assert list(best["config_seed"]) == [2, 1, 0] and set(best["selected_on"]) == {"val_acc"}
    on_test = per_variant(frame.assign(metric="test_acc")).set_index("variant")
    assert on_test.loc["a", "selected_on"] == "test_acc (selected on test)" and on_test.loc["a", "selected_epoch"] == 3


def test_repeats_of_one_configuration_count_once_in_means_cis_and_tests():
    """num_samples 2 over `seed: {grid: [0, 1]}` trains each seed twice, to identical results:
    two measurements, not four. Counted as four, the CI and the t-test would claim more than
    the data holds."""
    repeated = tidy(
        [
            ("a", 0, [0.1, 0.2, 0.30]),
            ("a", 1, [0.1, 0.2, 0.36]),
            ("a", 0, [0.1, 0.2, 0.30]),
            ("a", 1, [0.1, 0.2, 0.36]),
            ("b", 0, [0.2, 0.4, 0.40]),
            ("b", 1, [0.2, 0.4, 0.44]),
            ("b", 0, [0.2, 0.4, 0.40]),
            ("b", 1, [0.2, 0.4, 0.44]),
        ]
    )
    once = repeated[repeated["trial_id"].isin(["t0", "t1", "t4", "t5"])]
    t = per_variant(repeated).set_index("variant")
    assert t.loc["a", "trials"] == 4 and t.loc["a", "seeds"] == 2 and t.loc["a", "n"] == 2
    expected = per_variant(once).set_index("variant")
    for column in ("test_acc", "test_std", "test_ci_low", "test_ci_high", "selected_ci_low"):
        assert t.loc["a", column] == pytest.approx(expected.loc["a", column]), column
    assert t.loc["a", "test_ci_low"] == pytest.approx(mean_ci([0.30, 0.36])[2])
    e, e_once = effects(repeated).iloc[0], effects(once).iloc[0]
    assert (e["n"], e["n_baseline"]) == (2, 2)
    assert e["p_value"] == pytest.approx(e_once["p_value"])
    # A different configuration with the same seed is another measurement: a search's samples.
    searched = repeated.copy()
    searched.loc[searched["trial_id"].isin(["t2", "t3"]), "config_channels"] = 64
    assert per_variant(searched).set_index("variant").loc["a", "n"] == 4


def test_effects_use_welch_over_seeds_at_a_common_epoch():
    e = effects(FRAME).set_index("variant")
    # b/2 stopped at epoch 2, so both sides are read at epoch 2: a = 0.2 x3, b = 0.4 x3.
    assert e.loc["b", "at_epoch"] == 2
    assert e.loc["b", "diff_pp"] == pytest.approx(20.0)  # percentage points, as table 1's percent
    assert e.loc["b", "baseline"] == "a" and e.loc["b", "verdict"].startswith("better (no spread")
    assert math.isnan(e.loc["b", "p_value"])


def test_effects_report_welchs_ci_t_df_and_hedges_g_as_scipy_computes_them():
    a, b = [0.30, 0.32, 0.31, 0.35], [0.50, 0.52, 0.40]
    frame = tidy([("a", i, [v]) for i, v in enumerate(a)] + [("b", i, [v]) for i, v in enumerate(b)], epochs=1)
    e = effects(frame).set_index("variant").loc["b"]
    pp_a, pp_b = [100 * v for v in a], [100 * v for v in b]
    oracle = stats.ttest_ind(pp_b, pp_a, equal_var=False)
    ci = oracle.confidence_interval(0.95)
    assert e["diff_pp"] == pytest.approx(sum(pp_b) / 3 - sum(pp_a) / 4)
    assert (e["ci_low_pp"], e["ci_high_pp"]) == pytest.approx((ci.low, ci.high))
    assert (e["t"], e["df"], e["p_value"]) == pytest.approx((oracle.statistic, oracle.df, oracle.pvalue))
    pooled = math.sqrt((3 * stats.tvar(pp_a) + 2 * stats.tvar(pp_b)) / 5)
    assert e["hedges_g"] == pytest.approx(e["diff_pp"] / pooled * (1 - 3 / (4 * 7 - 9)))
    assert (e["n"], e["n_baseline"], e["family"]) == (3, 4, 1)


@pytest.mark.filterwarnings("error")
def test_effects_against_a_side_whose_seeds_all_scored_the_same_warn_of_nothing():
    """scipy's precision-loss warning once landed in the middle of the tables: none is raised now."""
    frame = tidy([("a", s, [0.9444444444444444]) for s in range(3)] + [("b", s, [0.90 + 0.01 * s]) for s in range(3)])
    e = effects(frame).set_index("variant")
    assert e.loc["b", "p_value"] == pytest.approx(
        stats.ttest_1samp([0.90, 0.91, 0.92], 0.9444444444444444).pvalue
    )  # Welch with one side at zero variance: a one-sample t-test of the other side


def test_effects_give_no_verdict_under_three_seeds_per_arm():
    frame = tidy([("a", 0, [0.3]), ("b", 0, [0.5]), ("b", 1, [0.6])], epochs=1)
    assert effects(frame).set_index("variant").loc["b", "verdict"].startswith("too few seeds (n = 1;")
    two = tidy([("a", s, [0.30 + 0.01 * s]) for s in range(2)] + [("b", s, [0.60 + 0.01 * s]) for s in range(2)])
    e = effects(two).set_index("variant").loc["b"]
    assert e["verdict"].startswith("too few seeds (n = 2;") and e["p_value"] < 0.05  # numbers shown, no verdict


def test_against_report_verdicts():
    reference = pd.DataFrame(
        [
            {"experiment": "exp", "variant": "a", "metric": "test_acc", "epoch": 3, "value": 0.31, "passage": "p1"},
            {"experiment": "exp", "variant": "a", "metric": "test_acc", "epoch": 3, "value": 0.20, "passage": "p2"},
            {
                "experiment": "exp",
                "variant": "a",
                "metric": "peak_test_acc",
                "epoch": None,
                "value": 0.60,
                "passage": "p3",
            },
            {"experiment": "exp", "variant": "b", "metric": "test_acc", "epoch": 3, "value": 0.51, "passage": "p4"},
            {"experiment": "exp", "variant": "c", "metric": "test_acc", "epoch": 3, "value": 0.5, "passage": "p5"},
            {"experiment": "exp", "variant": "a", "metric": "train_loss", "epoch": 1, "value": 1.0, "passage": "p6"},
        ]
    )
    reference["dataset"] = "cifar100"
    reference["fields"] = "channels=128"
    t = against_report(FRAME, reference)
    assert list(t["verdict"]) == ["reproduced", "higher", "lower", "reproduced", "not run", "reproduced"]
    assert t.loc[2, "metric"] == "peak_test_acc (selected on test)"  # a maximum over epochs of test
    assert t.loc[3, "n"] == 2  # b/2 never reached epoch 3
    assert t.loc[0, "measured"] == pytest.approx(0.31)


def test_compute_counts_what_asha_saved():
    c = compute(FRAME).iloc[0]
    assert c["trials"] == 6 and c["planned_epochs"] == 18 and c["trial_epochs"] == 17
    assert c["asha_saved_epochs"] == 1 and c["stopped_early"] == 1
    assert c["wall_time_s"] == 1000 + 10 * 5 + 2 * 2 - 1000  # first trial's start to the last result
    # Analysed while b/2 still runs (or after a stop): its remaining epoch is not saved yet.
    running = FRAME.assign(status=FRAME["status"].where(FRAME["trial_id"] != "t5", "RUNNING"))
    c = compute(running).iloc[0]
    assert c["asha_saved_epochs"] == 0 and c["saved_share"] == 0 and c["planned_epochs"] == 18


def test_compute_wall_time_leaves_out_the_pause_before_a_resume():
    frame = FRAME.assign(time_this_iter_s=2.0, session=0)
    resumed = frame["trial_id"].isin(["t4", "t5"])  # ran again an hour later, in a second Ray session
    frame.loc[resumed, "timestamp"] += 3600
    frame.loc[resumed, "session"] = 1
    # Session 0: t0's first epoch starts at 1000, t3's last result at 1036; session 1: t4's first
    # epoch starts at 4640 (1000 + 40 + 2 - 2 + 3600), t5's last result at 4654.
    assert compute(frame).iloc[0]["wall_time_s"] == (1036 - 1000) + (4654 - 4640)


def test_reference_covers_every_report_experiment_with_known_variants():
    import yaml

    reference = load_reference()
    assert {"experiment", "variant", "metric", "epoch", "value", "passage"} <= set(reference)
    for experiment, rows in reference.groupby("experiment"):
        with open(os.path.join(os.path.dirname(__file__), "..", "search_spaces", "report", f"{experiment}.yaml")) as f:
            variants = yaml.safe_load(f)["variants"]
        assert set(rows["variant"]) <= set(variants), experiment
    assert set(reference["metric"]) <= {"test_acc", "peak_test_acc", "train_loss"}


def test_tables_keep_the_frames_variant_order():
    # The first variant runs longer than the second (as when ASHA stops the second early).
    frame = tidy(
        [("zeta", 0, [0.1, 0.2]), ("zeta", 1, [0.3, 0.4]), ("alpha", 0, [0.1]), ("alpha", 1, [0.2])], baseline="zeta"
    )
    assert list(per_variant(frame)["variant"]) == ["zeta", "alpha"]


@pytest.mark.slow
def test_the_analysis_imports_no_ray():
    """Reading results must not need Ray (nor run its pickles): a fresh interpreter proves it."""
    import subprocess
    import sys

    code = "import sys, study.analysis, study.analysis.summary; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_against_report_compares_only_the_same_setting():
    reference = pd.DataFrame(
        [{"experiment": "exp", "variant": "a", "metric": "test_acc", "epoch": 3, "value": 0.31, "passage": "p"}]
    )
    other_data = FRAME.assign(config_dataset="cifar10")
    t = against_report(other_data, reference.assign(dataset="cifar100", fields="channels=128"))
    assert t.loc[0, "verdict"] == "not comparable (dataset cifar10, report cifar100)"
    t = against_report(FRAME, reference.assign(dataset="cifar100", fields="channels=32"))
    assert t.loc[0, "verdict"] == "not comparable (channels 128, report 32)"


def test_holm_adjusts_each_experiments_family_and_the_verdict_follows():
    from study.analysis.stats import holm

    p = pd.Series([0.01, 0.04, 0.03, float("nan")])
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert list(holm(p).round(10)[:3]) == [0.03, 0.06, 0.06] and math.isnan(holm(p)[3])
    frame = tidy(
        [("a", s, [0.30 + 0.01 * s]) for s in range(3)]
        + [("b", s, [0.32 + 0.01 * s]) for s in range(3)]
        + [("c", s, [0.50 + 0.01 * s]) for s in range(3)],
        epochs=1,
    )
    e = effects(frame).set_index("variant")
    p_b, p_c = e.loc["b", "p_value"], e.loc["c", "p_value"]
    assert p_c < p_b  # c differs from the baseline far more
    assert e.loc["c", "p_holm"] == pytest.approx(2 * p_c) and e.loc["b", "p_holm"] == pytest.approx(max(2 * p_c, p_b))
    assert e.loc["c", "verdict"] == "better (Holm p < 0.05)"
    assert e.loc["b", "verdict"] == "no clear effect (Holm p >= 0.05)"


def test_curve_labels_say_how_many_trials_reached_the_last_epoch():
    from study.analysis.plots import variant_label

    rows = [(t, e) for t, epochs in (("a", 6), ("b", 2), ("c", 2)) for e in range(1, epochs + 1)]
    stopped = pd.DataFrame(rows, columns=["trial_id", "epoch"])
    assert variant_label("cnn64", stopped) == "cnn64 (3 trials, 1 to epoch 6)"
    assert variant_label("mlp", stopped[stopped["trial_id"] == "a"]) == "mlp (1 trial)"


def test_nodes_count_the_busiest_ray_session_not_every_node_id_ever():
    from study.analysis.tables import nodes_used

    rows = pd.DataFrame(
        {
            "node_id": ["a", "a", "a", "b", "b", "c"],  # a: the run; b: its resume, on the same machine
            "session": [0, 0, 0, 1, 1, 1],
            "replayed": [None, None, None, True, None, None],
        }
    )
    rows.loc[3, "node_id"] = "a"  # an epoch replayed in session 1 names the node that first trained it
    assert nodes_used(rows) == 2  # session 1 trained on b and c
    assert nodes_used(rows[rows["node_id"] != "c"]) == 1
    assert nodes_used(rows.drop(columns=["session"])) == 3  # no sessions recorded: every id


def search_frame(values: list[float], metric: str = "test_acc", mode: str = "max", epochs: int = 2) -> pd.DataFrame:
    """A finished search's tidy frame: trial i samples lr and dropout and ends at values[i] (its
    `metric` at max_t); one more trial, stopped at epoch 1, is PRUNED and left out of importance."""
    import json

    searched = json.dumps(
        {"lr": {"kind": "loguniform", "values": [1e-4, 1e-1]}, "dropout": {"kind": "uniform", "values": [0.0, 0.5]}}
    )
    rows = []
    for i, value in enumerate([*values, values[0]]):
        last = 1 if i == len(values) else epochs
        for e in range(1, last + 1):
            rows.append(
                {
                    "experiment": "search",
                    "trial_id": f"t{i}",
                    "trial_dir": f"trial-s0-{i:05d}",
                    "variant": "all",
                    "baseline": None,
                    "config_seed": 0,
                    "config_epochs": epochs,
                    "config_lr": 1e-4 * 1.6**i,
                    "config_dropout": (i * 0.37) % 0.5,
                    "max_t": epochs,
                    "epoch": e,
                    "test_acc": value * e / epochs,
                    "test_loss": value * e / epochs,
                    "metric": metric,
                    "mode": mode,
                    "searched": searched,
                    "diverged": False,
                    "status": "TERMINATED",
                }
            )
    return pd.DataFrame(rows)


def dashboard_api(db: str, path: str) -> dict:
    """GET `path` from optuna-dashboard's own web app serving `db` (its sqlite:/// URL), in-process."""
    import io
    import json
    import sys

    import optuna_dashboard
    from optuna_dashboard._importance import param_importance_cache

    param_importance_cache.clear()  # the dashboard's, per study id and count of COMPLETE trials, process-wide
    app = optuna_dashboard.wsgi(f"sqlite:///{db}")
    status = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status == ["200 OK"], body
    return json.loads(body)


def dashboards_importance(db: str, name: str) -> dict[str, float]:
    """What optuna-dashboard shows for the study in `db`: its web API where it is installed, else
    its computation (optuna_dashboard/_importance.py: PED-ANOVA with default quantiles over the
    COMPLETE trials, target -value for a maximised objective) on the study Optuna loads."""
    import warnings

    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lambda t: sign * t.values[0]
            )
    assert dashboard_api(db, f"/api/studies/{study._study_id}")["objective_names"] == [study.metric_names[0]]
    (shown,) = dashboard_api(db, f"/api/studies/{study._study_id}/param_importances")["param_importances"]
    return {row["name"]: row["importance"] for row in shown}


@pytest.mark.parametrize("metric,mode", [("test_acc", "max"), ("test_loss", "min")])
def test_importance_agrees_with_optuna_dashboard_on_the_written_study(tmp_path, metric, mode, capsys):
    import optuna

    from study.analysis.importance import MIN_IMPORTANCE_TRIALS
    from study.analysis.summary import summarize_searches

    values = [0.1 + 0.05 * i + 0.01 * (i % 3) for i in range(MIN_IMPORTANCE_TRIALS + 2)]
    summarize_searches(search_frame(values, metric, mode), str(tmp_path), plots=False)
    table = pd.read_csv(tmp_path / "importance.csv")
    assert set(table["parameter"]) == {"lr", "dropout"}
    assert set(table["n_trials"]) == {len(values)}  # the COMPLETE trials; the pruned one is left out
    dashboard = dashboards_importance(str(tmp_path / "optuna.db"), "search")
    assert dict(zip(table["parameter"], table["importance"], strict=True)) == pytest.approx(dashboard)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.metric_names == [metric]  # the dashboard names the objective after it
    assert f"optuna-dashboard sqlite:///{tmp_path / 'optuna.db'}" in capsys.readouterr().out


def test_a_search_with_no_finished_trial_has_too_few_for_importance():
    from study.analysis.importance import importance_note
    from study.analysis.search import optuna_study

    running = search_frame([0.5]).assign(status="RUNNING", max_t=5)  # none finished: no trials in the study
    assert importance_note(optuna_study(running)).startswith("no importance: 0 trials reached max_t (COMPLETE)")


@pytest.mark.parametrize("why", ["too few", "flat"])
def test_importance_below_the_threshold_or_of_a_flat_objective_is_a_note_without_numbers(tmp_path, capsys, why):
    from study.analysis.importance import MIN_IMPORTANCE_TRIALS
    from study.analysis.summary import summarize_searches

    if why == "too few":
        values, note = [0.1 * i for i in range(1, MIN_IMPORTANCE_TRIALS)], f"needs at least {MIN_IMPORTANCE_TRIALS}"
        note = f"search: no importance: {MIN_IMPORTANCE_TRIALS - 1} trials reached max_t (COMPLETE); importance {note}"
    else:
        values = [0.5] * (MIN_IMPORTANCE_TRIALS + 2)
        note = (
            f"search: no importance: test_acc is the same in all {MIN_IMPORTANCE_TRIALS + 2} trials that reached max_t"
        )
    summarize_searches(search_frame(values), str(tmp_path), plots=False)
    assert pd.read_csv(tmp_path / "importance.csv").empty
    markdown = (tmp_path / "importance.md").read_text()
    assert markdown.splitlines()[2:] == [note]  # under the title: the note alone, no table
    assert note in capsys.readouterr().out
