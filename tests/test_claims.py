"""The claims' checks on synthetic summaries: "holds" only in every trial, the conditions they
name, the reference-PRA explanation, and a page that invents no number."""

import pytest

from unlearn_jax import claims, claims_page

CLASSES = ([0], [3], [7])


def _summary(models, *, classes=CLASSES, data="fashion_mnist", floor=None, reads=None):
  n = len(classes)
  reads = reads or {}
  return {"schema": 1, "experiment": "synthetic", "kind": "protocol",
          "config": {"data": {"name": data}, "model": {"name": "small_cnn"}},
          "seeds": list(range(n)), "forget_classes": [list(c) for c in classes],
          "models": {name: {"metrics": {k: list(v) for k, v in metrics.items()},
                            "reads": reads.get(name), "hparams": None}
                     for name, metrics in models.items()},
          "noise_floor": floor or [None] * n}


def _ou(spotter, ga, retrain=(0.05, 0.05, 0.05)):
  return _summary({"original": {"OU/pgd": [0.3] * 3}, "retrain": {"OU/pgd": list(retrain)},
                   "ga": {"OU/pgd": list(ga)}, "spotter": {"OU/pgd": list(spotter)}})


def test_ou_holds_only_when_far_below_in_every_trial():
  assert claims.check_ou(_ou((0.004, 0.005, 0.006), (0.03, 0.04, 0.02))).verdict == "holds"
  two_of_three = claims.check_ou(_ou((0.004, 0.005, 0.03), (0.03, 0.04, 0.02)))
  assert two_of_three.verdict.startswith("fails in 1 of 3 trials; holds only for forget "
                                         "classes 0, 3 (fails on 7)")
  lowest = claims.check_ou(_ou((0.004, 0.005, 0.015), (0.03, 0.04, 0.02)))
  assert lowest.verdict.startswith("holds only as 'the lowest', not 'far below'")
  labels = [label for label, _, _ in lowest.numbers]
  assert "lowest baseline OU PGD (ga / ga / ga)" in labels  # the original is not a baseline
  ours = _ou((0.004, 0.005, 0.006), (0.03, 0.04, 0.02))
  for name in ("spotter_align", "spotter_plus_ft"):  # nor are the project's own methods
    ours["models"][name] = {"metrics": {"OU/pgd": [0.001] * 3}}
  assert claims.check_ou(ours).verdict == "holds"
  assert claims.check_ou(_ou((0.04, 0.05, 0.03), (0.03, 0.04, 0.02))).verdict == "fails"


def test_a_missing_measurement_does_not_hold():
  finding = claims.check_ou(_ou((0.004, None, 0.006), (0.03, 0.04, 0.02)))
  assert finding.verdict != "holds" and "fails on 3" in finding.verdict


def _pra(spotter_ref, spotter_strongest, retrain_ref, retrain_strongest, original_ref=(80.0,) * 3,
         data="fashion_mnist"):
  at = ["α=0.60 K=5 cos"] * 3
  return _summary({
      "original": {"PRA/ref": list(original_ref), "PRA/forget": [99.0] * 3},
      "retrain": {"PRA/ref": list(retrain_ref), "PRA/forget": list(retrain_strongest)},
      "spotter": {"PRA/ref": list(spotter_ref), "PRA/forget": list(spotter_strongest),
                  "PRA/ref_alpha": [0.8] * 3, "PRA/strongest_at": at}}, data=data)


def test_pra_at_both_settings_and_whether_the_attack_or_the_model_explains_it():
  attack = claims.check_pra(_pra((2.0, 3.0, 4.0), (85.0, 80.0, 90.0), (60.0, 40.0, 50.0),
                                 (62.0, 45.0, 52.0)))
  assert attack.verdict == ("holds only at the reference setting (cosine, K = 5, α = 0.80); "
                            "fails against the strongest attack in 3 of 3 trials")
  assert "comes from the attack" in attack.note and "2.0 %" in attack.note
  assert "(reference 2.4 %)" in attack.note and "α=0.60 K=5 cos" in attack.note
  model = claims.check_pra(_pra((70.0, 3.0, 4.0), (85.0, 80.0, 90.0), (60.0, 40.0, 50.0),
                                (62.0, 45.0, 52.0)))
  assert "comes from the model" in model.note and model.verdict.startswith("fails")
  held = claims.check_pra(_pra((2.0, 3.0, 4.0), (20.0, 20.0, 20.0), (60.0,) * 3, (62.0,) * 3))
  assert held.verdict == "holds" and "No difference to explain" in held.note
  barely = claims.check_pra(_pra((99.9,) * 3, (80.0,) * 3, (100.0,) * 3, (40.0,) * 3))
  assert barely.verdict == "fails" and "comes from the model" in barely.note  # not half of 100
  digits = claims.check_pra(_pra((2.0,) * 3, (20.0,) * 3, (60.0,) * 3, (62.0,) * 3,
                                 data="digits"))
  assert digits.note == ""  # the reference's numbers are for Fashion-MNIST class 0


def test_recovery_holds_in_two_of_three_is_not_holds():
  s = _summary({"retrain": {"FM/forget": [40.0, 20.0, 60.0], "HR/forget": [0.0] * 3,
                            "HR_labels/forget": [90.0] * 3},
                "opc": {"FM/forget": [0.1, 30.0, 0.0], "HR/forget": [0.0] * 3,
                        "HR_labels/forget": [10.0] * 3}})
  finding = claims.check_recovery(s)
  assert finding.verdict == ("fails in 1 of 3 trials; holds only for forget classes 0, 7 "
                             "(fails on 3)")
  assert [label for label, _, _ in finding.numbers] == [
      "OPC FM", "Retrain FM", "OPC HR", "Retrain HR", "OPC HR lab.", "Retrain HR lab."]
  s["models"]["opc"]["metrics"]["HR_labels/forget"] = [95.0] * 3  # HR with labels undoes it
  assert claims.check_recovery(s).verdict.startswith("fails")


def test_inversion_collapse_and_no_retain_data():
  s = _summary({"original": {"inversion/psnr": [18.0] * 3, "norm/forget": [10.0] * 3},
                "retrain": {"inversion/psnr": [22.0] * 3, "UA": [100.0] * 3, "TA": [91.0] * 3},
                "spotter": {"inversion/psnr": [19.0] * 3, "UA": [100.0, 100.0, 94.0],
                            "TA": [90.0, 89.0, 90.5]},
                "opc": {"inversion/psnr": [9.0, 9.5, 18.5], "norm/forget": [1e-4, 2e-4, 0.5],
                        "CKA/retrain/forget": [0.02] * 3}},
               reads={"spotter": ["forget"]})
  assert claims.check_inversion(s).verdict.endswith("(fails on 7)")
  assert claims.check_collapse(s).verdict.endswith("(fails on 7)")
  assert claims.check_no_retain(s).verdict.endswith("(fails on 7)")  # UA 94 < 95
  s["models"]["spotter"]["reads"] = ["forget", "retain"]
  assert claims.check_no_retain(s).verdict == "fails"


def test_residuals_against_retrains_noise_floor():
  floor = [{"forget/rc/procrustes/mean": 0.28, "forget/rc/procrustes/std": 0.005}] * 3
  s = _summary({"original": {"UA": [0.0] * 3, "RC/forget": [0.5] * 3},
                "retrain": {"UA": [100.0] * 3, "RC/forget": [0.0] * 3},
                "ga": {"UA": [97.0] * 3, "RC/forget": [0.31, 0.33, 0.30]},
                "opc": {"UA": [100.0] * 3, "RC/forget": [0.9, 0.2, 0.9]},
                "bad": {"UA": [50.0] * 3, "RC/forget": [0.9] * 3}}, floor=floor)
  finding = claims.check_residuals(s)
  assert finding.verdict == "holds" and finding.note == "Above the floor in every trial: ga."
  assert finding.numbers[1][1] == [1.0, 0.5, 1.0]  # the share among output-forgetting methods
  without = claims.check_residuals(_summary({"ga": {"UA": [97.0] * 3, "RC/forget": [0.9] * 3}}))
  assert without.verdict == "fails"  # no noise floor recorded: nothing to measure against


def test_plug_and_play_needs_pairs():
  assert claims.check_plug_and_play(_summary({"ft": {}})).verdict.startswith("not checkable")
  s = _summary({"ft": {"OU/pgd": [0.04] * 3, "UA": [100.0] * 3},
                "spotter_plus_ft": {"OU/pgd": [0.01, 0.01, 0.05], "UA": [100.0] * 3},
                "ga": {"OU/pgd": [0.04] * 3, "UA": [96.0] * 3},
                "spotter_plus_ga": {"OU/pgd": [0.01] * 3, "UA": [95.5, 95.5, 94.0]}})
  finding = claims.check_plug_and_play(s)
  assert finding.verdict.endswith("(fails on 7)")
  # Per method: GA's UA falls 2 points on class 7 (more than 1), FT's OU@ε rises there.
  assert finding.note == "Holds in every trial for no method; not for ft (fails on 7); ga (fails " \
                         "on 7)."
  s["models"]["spotter_plus_ft"]["metrics"]["OU/pgd"] = [0.01] * 3
  assert claims.check_plug_and_play(s).note == "Holds in every trial for ft; not for ga (fails " \
                                               "on 7)."


def test_page_says_not_run_yet_and_invents_no_number():
  page = claims_page.render_claims({})
  for claim in claims.CLAIMS:
    for name in claim.experiments:
      assert f"not run yet (needs results/{name}.json)" in page
  rows = [line for line in page.splitlines() if "not run yet" in line]
  assert rows and all("| — | — | not run yet" in line and line.endswith("| — |") for line in rows)
  s = _pra((2.0, 3.0, 4.0), (85.0, 80.0, 90.0), (60.0, 40.0, 50.0), (62.0, 45.0, 52.0))
  page = claims_page.render_claims({"fashion_mnist_class": s})
  row = next(line for line in page.splitlines() if line.startswith("| PRA defeated")
             and "fashion_mnist_class" in line)
  assert "Spotter PRA ref.: 3.0 ± 0.8" in row and "holds only at the reference setting" in row
  assert "n = 3 trials" in row and "[results/fashion_mnist_class.json]" in row
  assert "comes from the attack" in page


@pytest.mark.parametrize("classes, bar", [(CLASSES, False), (([0],), True)])
def test_setting_names_the_bar_of_three_classes(classes, bar):
  text = claims_page.setting(_summary({}, classes=classes))
  assert ("below the bar of 3 forget classes" in text) == bar


def _composed(fm, ra=(93.0, 92.0, 91.0)):
  retrain = {"OU/pgd": [0.05, 0.03, 0.07], "FM/forget": [40.0, 10.0, 70.0],
             "RA": [93.0, 92.5, 91.5], "TA": [91.0, 90.0, 89.0], "UA": [100.0] * 3}
  mine = {"OU/pgd": [0.01, 0.01, 0.01], "FM/forget": list(fm), "RA": list(ra),
          "TA": [90.5, 89.5, 88.5], "UA": [100.0] * 3}
  return _summary({"original": {"FM/forget": [95.0] * 3}, "retrain": retrain,
                   "spotter_align": mine})


def test_composed_method_is_held_to_retrains_mean_plus_two_std_and_its_accuracy():
  # Retrain FM: mean 40, std 24.49 → bar 88.99; OU bar 0.05 + 2·0.0163 = 0.0827.
  assert claims.check_composed(_composed((80.0, 20.0, 88.9))).verdict == "holds"
  over = claims.check_composed(_composed((80.0, 20.0, 89.1)))
  assert over.verdict.startswith("fails in 1 of 3 trials") and "FM" in over.note
  low_ra = claims.check_composed(_composed((10.0, 10.0, 10.0), ra=(93.0, 91.0, 91.0)))
  assert "fails on 3" in low_ra.verdict and "RA (trial 1)" in low_ra.note
  labels = [label for label, _, _ in over.numbers]
  assert "Retrain FM (bar: mean + 2 std = 88.99)" in labels  # attacks not run are skipped
  assert not any("PRA" in label for label in labels)
  assert claims.check_composed(_summary({"retrain": {}})).verdict.startswith("not checkable")


def test_u_lira_claim_reads_retrains_spread_over_target_models():
  def population(accuracy, ra=90.0):  # one population run: a mean ± std over target models
    return _summary({"retrain": {"u_lira.accuracy": [{"mean": 0.50, "std": 0.02}],
                                 "RA": [90.0], "TA": [80.0]},
                     "spotter_align": {"u_lira.accuracy": [{"mean": accuracy, "std": 0.03}],
                                       "RA": [ra], "TA": [79.5]}}, classes=((0,),))

  held = claims.check_ulira(population(0.539))  # bar: 0.50 + 2 · 0.02 = 0.54
  assert held.verdict == "holds"
  assert ("spotter_align TA − Retrain's", [-0.5], ".1f") in held.numbers
  assert claims.check_ulira(population(0.541)).verdict == "fails"
  assert claims.check_ulira(population(0.50, ra=88.9)).verdict == "fails"  # RA 1.1 points lower
  assert claims.check_ulira(_summary({"retrain": {}}, classes=((0,),))).verdict.startswith(
      "not checkable")


def test_the_gap_to_the_paper_is_split_into_original_attack_and_mode():
  from unlearn_jax import paper_gap
  ours = _summary({"spotter": {"PRA/ref": [99.0, 98.0, 97.0], "PRA/forget": [80.0, 85.0, 90.0],
                               "OU/pgd": [0.004] * 3},
                   "retrain": {"PRA/ref": [100.0] * 3}, "original": {"PRA/ref": [99.9] * 3}})
  reference = _summary({"spotter": {"PRA/ref": [3.0, 4.0, 5.0], "PRA/forget": [30.0, 35.0, 40.0],
                                    "OU/pgd": [0.01, 0.02, 0.03],
                                    "OU/reference/pgd": [0.03, 0.03, 0.03]},
                        "original": {"head/norm_forget": [1.7] * 3,
                                     "head/norm_kept": [1.6] * 3}})
  found = paper_gap.sources(ours, reference)
  assert found["original"] == pytest.approx(94.0) and found["mode"] == pytest.approx(-0.01)
  assert found["attack (our original)"] == pytest.approx(-13.0)
  assert found["attack (reference original)"] == pytest.approx(31.0)
  page = "\n".join(paper_gap.render_paper_gap({paper_gap.OURS: ours,
                                               paper_gap.REFERENCE: reference}))
  assert "| Spotter PRA ref. | 99.0 | 98.0 | 97.0 | 3.0 | 4.0 | 5.0 |" in page
  assert "| original head ‖W_f‖ / ‖W_kept‖ | — / — | — / — | — / — | 1.70 / 1.60 |" in page
  assert "reference recipe's: +94.0 points" in page and "-0.0100" in page
  assert "-13.0 points from the project's original, +31.0 points from the reference" in page
  assert "Not run yet (needs results/fashion_mnist_class_reference.json)" in "\n".join(
      paper_gap.render_paper_gap({paper_gap.OURS: ours}))
