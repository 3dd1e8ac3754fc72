"""Unit tests of the test command's own logic (suite/ci.py): which suite rows
it plans, how a row is judged against the committed stdlib results and the
ratchet, and that a row that did not run is reported and fails the run."""
import importlib.util
import json
import os
import sys

import pytest

# the runner lives in suite/, beside tests/
_SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "suite")


@pytest.fixture(scope="module")
def ci():
    spec = importlib.util.spec_from_file_location(
        "_cmp_ci", os.path.join(_SUITE, "ci.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")
def test_default_methods_per_version(ci):
    assert ci.default_method("3.11") == "fork"
    assert ci.default_method("3.13") == "fork"
    assert ci.default_method("3.14") == "forkserver"
    assert ci.default_method("3.15") == "forkserver"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")
def test_plan_every_method_on_two_versions_default_elsewhere(ci):
    plan = dict(ci.plan_rows(ci.DEFAULT_PYTHONS.split(","), "",
                             ci.ALL_METHODS_ON.split(",")))
    assert set(plan) == {"3.11", "3.12", "3.13", "3.14", "3.15"}
    assert plan["3.12"] == plan["3.14"] == ["fork", "spawn", "forkserver"]
    assert plan["3.11"] == plan["3.13"] == ["fork"]
    assert plan["3.15"] == ["forkserver"]
    forced = dict(ci.plan_rows(["3.11"], "spawn", []))
    assert forced == {"3.11": ["spawn"]}


def _suite_data(passed, failed=(), na=(), hung=0):
    tests = {t: "passed" for t in passed}
    tests.update({t: "failed" for t in failed})
    tests.update({t: "n/a" for t in na})
    return {"result": {"python": "3.14.10", "tests": tests,
                       "totals": {"hung": hung}, "seconds": 1.0,
                       "stopped": None},
            "stdlib": None}


def test_row_compares_with_recorded_stdlib(ci):
    recorded = {"3.14": {"fork": {"python": "3.14.10",
                                  "passed": ["A.a", "A.b", "A.c", "A.d"]}}}
    failures = []
    row = ci.record_row(_suite_data(["A.a", "A.b"], failed=["A.c"],
                                    na=["A.d"]),
                        recorded, {"3.14": {"fork": 2}}, "3.14", "fork",
                        failures, False)
    assert row["passed"] == 2 and row["stdlib"] == 4
    assert row["missing"] == ["A.c"]          # n/a is listed apart
    assert row["na"] == 1
    assert failures == []                     # at the ratchet: not below


def test_row_below_ratchet_fails_and_update_raises_it(ci):
    failures, ratchet = [], {"3.12": {"spawn": 5}}
    ci.record_row(_suite_data(["A.a"]), {}, ratchet, "3.12", "spawn",
                  failures, True)
    assert len(failures) == 1 and "below the ratchet" in failures[0]
    failures = []
    ci.record_row(_suite_data(["A.%d" % i for i in range(7)]), {}, ratchet,
                  "3.12", "spawn", failures, True)
    assert failures == [] and ratchet["3.12"]["spawn"] == 7


def test_narrowed_row_is_judged_by_the_tests_that_ran(ci):
    recorded = {"3.12": {"fork": {"python": "3.12.1",
                                  "passed": ["A.a", "A.b", "B.c"]}}}
    ratchet = {"3.12": {"fork": 300}}
    failures = []
    row = ci.record_row(_suite_data(["A.a", "A.b"]), recorded, ratchet,
                        "3.12", "fork", failures, True, narrowed=True)
    assert failures == [] and row["missing"] == []   # B.c did not run
    assert ratchet["3.12"]["fork"] == 300             # left alone
    ci.record_row(_suite_data(["A.a"], failed=["A.b"]), recorded, ratchet,
                  "3.12", "fork", failures, False, narrowed=True)
    assert len(failures) == 1 and "--only" in failures[0]


def test_row_without_result_is_a_failure(ci, capsys):
    failures = []
    row = ci.record_row(None, {}, {}, "3.15", "forkserver", failures, False)
    assert row["not_run"] and failures
    ci.print_suite_table([row])
    assert "NOT RUN" in capsys.readouterr().out


def test_record_stdlib_from_files(ci, tmp_path, monkeypatch):
    target = tmp_path / "stdlib_results.json"
    monkeypatch.setattr(ci, "STDLIB_RESULTS", str(target))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"result": {
        "implementation": "stdlib", "python": "3.15.2",
        "start_method": "spawn",
        "tests": {"B.x": "passed", "B.y": "skipped", "A.z": "passed"}},
        "stdlib": None}))
    assert ci.record_stdlib_from([str(run)]) == 0
    data = json.loads(target.read_text())
    assert data == {"3.15": {"spawn": {"python": "3.15.2",
                                       "passed": ["A.z", "B.x"]}}}
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"result": {
        "implementation": "cmultiprocessing", "python": "3.15.2",
        "start_method": "spawn", "tests": {}}, "stdlib": None}))
    with pytest.raises(SystemExit):
        ci.record_stdlib_from([str(ours)])


def test_committed_stdlib_results_cover_the_default_plan(ci):
    recorded = ci.load_json(ci.STDLIB_RESULTS)
    if not sys.platform.startswith("linux"):
        pytest.skip("recorded on Linux")
    for version, methods in ci.plan_rows(ci.DEFAULT_PYTHONS.split(","), "",
                                         ci.ALL_METHODS_ON.split(",")):
        for method in methods:
            entry = recorded[version][method]
            assert entry["python"].startswith(version + ".")
            assert len(entry["passed"]) > 300


def _cf_data(passed, failed=(), warnings=(), stdlib_modules=(), hung=0):
    tests = {t: "passed" for t in passed}
    tests.update({t: "failed" for t in failed})
    return {"result": {"python": "3.14.10", "tests": tests,
                       "totals": {"hung": hung}, "seconds": 1.0,
                       "stopped": None, "warnings": list(warnings),
                       "stdlib_modules": list(stdlib_modules)},
            "stdlib": None}


LEAK = ("resource_tracker: There appear to be 6 leaked semaphore objects "
        "to clean up at shutdown")


def test_cf_row_compares_with_recorded_stdlib(ci):
    recorded = {"3.14": {"python": "3.14.10", "passed": ["m.A.a", "m.A.b"],
                         "leaks": ["6 leaked semaphore"]}}
    failures = []
    row = ci.record_cf_row(_cf_data(["m.A.a", "m.A.b"], warnings=[LEAK]),
                           recorded, "3.14", failures)
    assert failures == []          # the stdlib's own leak is not ours
    assert row["passed"] == row["stdlib"] == 2 and row["missing"] == []
    row = ci.record_cf_row(_cf_data(["m.A.a"], failed=["m.A.b"],
                                    warnings=[LEAK, LEAK]),
                           recorded, "3.14", failures)
    assert row["missing"] == ["m.A.b"]
    assert len(failures) == 2      # a missing test, a leak of our own
    failures = []
    ci.record_cf_row(_cf_data(["m.A.a", "m.A.b"],
                              stdlib_modules=["multiprocessing"]),
                     recorded, "3.14", failures)
    assert failures and "stdlib's multiprocessing" in failures[0]


def test_cf_row_of_an_interpreter_without_the_suite(ci):
    failures = []
    row = ci.record_cf_row({"absent": True, "python": "3.12.1"}, {}, "3.12",
                           failures)
    assert failures == [] and "no test_concurrent_futures" in row["not_run"]
    row = ci.record_cf_row(None, {}, "3.13", failures)
    assert row["not_run"] == "runner failed" and len(failures) == 1


def test_stage_table_marks_failed_stages(ci):
    stages = ci.Stages()
    stages.run("plain", lambda: None)
    stages.run("returns False", lambda: False)
    stages.run("unit, failed", lambda: (False, {}), judge=lambda r: r[0])
    stages.run("unit, passed", lambda: (True, {}), judge=lambda r: r[0])
    assert [(name, status) for name, _, status in stages.rows] == [
        ("plain", "ok"), ("returns False", "FAILED"),
        ("unit, failed", "FAILED"), ("unit, passed", "ok")]
    stages.run("suite, judged after", lambda: {})
    stages.fail_last()
    assert stages.rows[-1][2] == "FAILED"


def test_stage_table_prints_a_stage_figures(ci, capsys):
    stages = ci.Stages()
    stages.run("ASan+UBSan unit tests, 3.12",
               lambda: {"ok": True, "figures": "5 passed"},
               judge=lambda r: r["ok"])
    stages.annotate("5 passed, 0 failed")
    stages.run("plain", lambda: None)
    stages.print(1.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith("ok  (5 passed, 0 failed)")
    assert lines[3].rstrip().endswith("ok")


def test_pytest_counts_from_the_closing_line(ci):
    out = ("....s.F\n=== short test summary info ===\nFAILED t.py::x\n"
           "1 failed, 5 passed, 1 skipped, 2 errors in 3.21s (0:00:03)\n"
           "/usr/lib/python3.14/resource_tracker.py: There appear to be 1 "
           "leaked semaphore objects\n")
    assert ci.pytest_counts(out) == {"passed": 5, "failed": 1,
                                     "skipped": 1, "errors": 2}
    assert ci.pytest_counts("12 passed in 0.50s") == {
        "passed": 12, "failed": 0, "skipped": 0, "errors": 0}
    # stopped by its time limit: no closing line, nothing counted
    assert ci.pytest_counts("t.py::x 3 passed so far\nunit tests stopped "
                            "after 60 s\n")["passed"] == 0


def test_sanitizer_env_and_reports(ci, tmp_path):
    env = ci.sanitizer_env("/usr/lib/libasan.so", str(tmp_path))
    assert env["LD_PRELOAD"] == "/usr/lib/libasan.so"
    asan = dict(o.split("=", 1) for o in env["ASAN_OPTIONS"].split(":"))
    ubsan = dict(o.split("=", 1) for o in env["UBSAN_OPTIONS"].split(":"))
    assert asan["detect_leaks"] == "0"
    assert asan["log_path"] == str(tmp_path / "asan")
    assert ubsan["halt_on_error"] == "1" and ubsan["print_stacktrace"] == "1"
    assert ubsan["log_path"] == str(tmp_path / "ubsan")
    assert env["PYTHONMALLOC"] == "malloc"
    assert ci.sanitizer_reports(str(tmp_path)) == []
    assert ci.sanitizer_reports(str(tmp_path / "absent")) == []
    (tmp_path / "asan.1234").write_text("ERROR: AddressSanitizer: boom\n")
    assert ci.sanitizer_reports(str(tmp_path)) == [
        ("asan.1234", "ERROR: AddressSanitizer: boom\n")]


def test_asan_judgement(ci):
    clean = {"passed": 790, "failed": 0, "skipped": 30, "errors": 0}
    ok, figures = ci.judge_asan(0, clean, [])
    assert ok and figures == ("790 passed, 0 failed, 30 skipped, "
                              "0 sanitizer reports")
    # a report fails the stage even when every test passed (a child's)
    assert not ci.judge_asan(0, clean, [("ubsan.77", "runtime error")])[0]
    assert not ci.judge_asan(1, dict(clean, failed=1), [])[0]
    assert not ci.judge_asan(-1, dict(clean, passed=0), [])[0]   # timed out
    assert "2 failed" in ci.judge_asan(1, dict(clean, errors=2), [])[1]


def test_refleak_judgement(ci):
    counts = {"passed": 40, "failed": 0, "skipped": 2, "errors": 0}
    clean = {"checked": 40, "leaks": {}, "not_checked": {}}
    assert ci.judge_refleak(0, counts, clean) == (
        True, "40 tests checked, 0 leaks, 0 failed", [])
    leaky = dict(clean, leaks={"tests/test_q.py::test_get": {
        "refs": [5, 5, 6], "blocks": [2, 1, 1]}})
    ok, figures, leaks = ci.judge_refleak(1, counts, leaky)
    assert not ok and figures == "40 tests checked, 1 leaks, 0 failed"
    assert leaks == ["tests/test_q.py::test_get: blocks grew by [2, 1, 1], "
                     "refs grew by [5, 5, 6]"]
    assert not ci.judge_refleak(0, counts, None)[0]          # no result
    assert not ci.judge_refleak(1, dict(counts, failed=1), clean)[0]
    assert not ci.judge_refleak(0, counts, dict(clean, checked=0))[0]


def test_left_out_tests_become_pytest_options(ci, capsys):
    args = ci._leave_out({"tests/test_build.py": "packaging",
                          "tests/test_pool.py::test_x[a b]": "segfaults"},
                         "ASan+UBSan")
    # a file by its path, a test by its node id (relative to the rootdir)
    assert args == ["--ignore", os.path.join(ci.ROOT, "tests",
                                             "test_build.py"),
                    "--deselect", "tests/test_pool.py::test_x[a b]"]
    out = capsys.readouterr().out
    assert "not run: tests/test_build.py (packaging)" in out
    assert "not run: tests/test_pool.py::test_x[a b] (segfaults)" in out
    # every test left out says why
    for table in (ci.ASAN_DESELECT, ci.REFLEAK_DESELECT):
        assert all(why.strip() for why in table.values())


@pytest.fixture(scope="module")
def refleak():
    spec = importlib.util.spec_from_file_location(
        "_cmp_refleak", os.path.join(os.path.dirname(_SUITE), "tools",
                                     "refleak.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refleak_rule_is_cpythons(refleak):
    # CPython's examples (Lib/test/libregrtest/refleak.py): leaks...
    assert refleak.leaking([5, 5, 6]) and refleak.leaking([10, 1, 1])
    # ... and noise
    for noise in ([3, 0, 0], [0, 1, 0], [8, -8, 1], [0, 0, 0], []):
        assert not refleak.leaking(noise)
    assert refleak.verdict({"refs": [1, 1, 1], "blocks": [0, 2, 2],
                            "fds": [1, 1, 1]}) == ["refs", "fds"]
    assert refleak.parse_spec("3:3") == (3, 3)
    assert refleak.parse_spec("2:4") == (2, 4)
    with pytest.raises(ValueError):
        refleak.parse_spec("0:3")


def test_cluster_stage_judgement_and_files(ci):
    clean = {"passed": 36, "failed": 0, "skipped": 0, "errors": 0}
    assert ci.judge_cluster(0, clean) == (True, "36 passed, 0 failed, "
                                          "0 skipped")
    # a skip means Dask, root or ip netns was missing: the stage is there
    # to have them
    assert not ci.judge_cluster(0, dict(clean, skipped=1))[0]
    assert not ci.judge_cluster(1, dict(clean, failed=1))[0]
    assert not ci.judge_cluster(-1, dict(clean, passed=0))[0]   # timed out
    for name in ci.CLUSTER_TESTS:
        assert os.path.exists(os.path.join(ci.ROOT, "tests", name))
