"""The Table 4 summary across tasks: which record fills which cell."""

import json

import pytest

from nas_jax.report import summary
from nas_jax.tasks import study_metrics

TABLE = summary.summaries(study_metrics())


def rec(task, model, metrics, **setting):
    return {"task": task, "model": model, "metrics": metrics, "setting": {"family": "nas", **setting}}


RECORDS = [
    rec("pgd", "darts", {"clean_accuracy": 0.9, "asr_most_likely": 0.5, "asr_least_likely": 0.2}),
    rec("pgd", "darts", {"clean_accuracy": 0.95, "asr_most_likely": 0.8, "asr_least_likely": 0.4}),  # newer
    rec("backdoor", "darts", {"asr": 0.7, "cad": 0.01}, attack="trojannn", n_neuron=2),
    rec("backdoor", "darts", {"asr": 0.99, "cad": 0.05}, attack="trojannn", n_neuron=4),  # Fig 8 sweep, newer
    rec("backdoor", "darts", {"asr": 0.3, "cad": 0.0}, attack="badnet", n_neuron=None),
    rec("membership", "darts", {"auc": 0.56}),
    rec("stealing", "darts", {"ace": 1.4}, aware=True, budget=1000),
    rec("stealing", "darts", {"ace": 1.1}, aware=True, budget=8000),
    rec("stealing", "darts", {"ace": 0.9}, aware=False, budget=16000),  # another replica: not this column
    rec("poison", "darts", {"cad": 0.02}, fraction=0.1),
    rec("poison", "darts", {"cad": 0.07}, fraction=0.4),
    rec("poison", "darts", {"cad": 0.0}, fraction=0.0),
    rec("backdoor", "darts_i", {"asr": 0.6, "cad": 0.03}, attack="trojannn", n_neuron=3),  # only n_neuron 3 run
    # a record from before the ASR over all stamped inputs became the headline 'asr' (docs/protocol.md §e.4)
    rec("backdoor", "resnet", {"asr": 0.5, "asr_including_target": 0.55, "cad": 0.02}, attack="trojannn",
        n_neuron=2),
]


def test_each_cell_takes_the_right_record():
    darts, darts_i, resnet = summary.summarize(RECORDS, TABLE)
    assert resnet["backdoor_asr"] == 0.55  # the old record's target-inclusive ASR, the column's definition
    assert darts == {"model": "darts", "label": "darts", "settings": None, "family": "nas", "searched": None, "clean_accuracy": 0.95, "pgd_m": 0.8, "pgd_l": 0.4,
                     "backdoor_asr": 0.7, "backdoor_cad": 0.01, "mi_auc": 0.56, "ace": 1.1, "ace_budget": 8000,
                     "poison_cad": 0.07, "poison_fraction": 0.4}
    assert darts_i == {"model": "darts_i", "label": "darts_i", "settings": None, "family": "nas", "searched": None, "backdoor_asr": 0.6, "backdoor_cad": 0.03}
    text = summary.render([darts, darts_i], TABLE)
    assert "search (method" not in text  # no searched cell: no search column
    assert "80.0%" in text and "+7.0%" in text and "at 8000 queries" in text and "p = 0.4" in text
    assert text.splitlines()[3].split()[2] == "-"  # darts_i has no clean accuracy
    assert "darts 100.0%/86.7%, 99.9%/2.7%, 0.562; darts_i 88.3%/72.7%, 90.4%/4.6%, 0.534." in text  # docs/protocol.md §h.4


def test_cli_writes_the_table_and_refuses_unknown_models(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "t.md"
    assert summary.main([str(tmp_path), "--models", "darts_i,darts", "--out", str(out)], TABLE) == 0
    lines = out.read_text().splitlines()
    assert lines[2].startswith("darts_i") and lines[3].startswith("darts ")
    with pytest.raises(SystemExit):
        summary.main([str(tmp_path), "--models", "enas"], TABLE)
    assert "models with records: darts, darts_i, resnet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        summary.main([str(tmp_path / "empty")], TABLE)


def test_searched_cells_get_a_row_per_method_and_mitigation(tmp_path):
    """launch/table4.sh names a searched cell genotype:{search workdir}/genotype.json; the search record there
    says which searcher and mitigation found it."""
    rows = []
    for method, variant, n_step in (("gdas", "darts_i", 5), ("darts", "darts", 1)):
        sdir = tmp_path / "search" / f"{method}_{variant}"
        sdir.mkdir(parents=True)
        search = rec("search", f"genotype:{sdir}/genotype.json", {}, method=method, variant=variant, n_step=n_step,
                     genotype_path=f"{sdir}/genotype.json")
        attack = rec("pgd", f"genotype:{sdir}/genotype.json", {}, method="not the search")  # run beside it
        (sdir / "results.jsonl").write_text(json.dumps(search) + "\n" + json.dumps(attack) + "\n")
        rows.append(rec("pgd", f"genotype:{sdir}/genotype.json",
                        {"clean_accuracy": 0.9, "asr_most_likely": 0.7, "asr_least_likely": 0.3}))
    gdas, plain, stored = summary.summarize([*rows, *RECORDS[:1]], TABLE)
    assert (gdas["searched"], plain["searched"], stored["searched"]) == ("gdas / darts_i", "darts / darts", None)
    text = summary.render([gdas, plain, stored], TABLE)
    assert "search (method / mitigation)" in text and "gdas / darts_i" in text.splitlines()[2]
    assert summary.search_label(f"genotype:{tmp_path}/elsewhere/genotype.json") is None  # no search record there
