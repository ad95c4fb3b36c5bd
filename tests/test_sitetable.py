import pandas as pd
import pytest

from morphoscale.data.sitetable import REQUIRED_COLUMNS, SiteColumns, build_site_table, normalize_well
from morphoscale.errors import Problems, ValidationError


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("B2", "B02"),
        ("b02", "B02"),
        ("P24", "P24"),
        ("AF48", "AF48"),
        (" C010 ", "C10"),
        ("Z1", "Z01"),
        ("B49", None),
        ("AZ1", None),
        ("2B", None),
        ("", None),
    ],
)
def test_normalize_well(raw, expected):
    assert normalize_well(raw) == expected


def _raw(**over):
    df = pd.DataFrame(
        {
            "plate": ["P1", "P1", "P1", "P2"],
            "well": ["A01", "A02", "A03", "A01"],
            "site": ["1", "1", "1", "1"],
            "batch": ["b1", "b1", "b1", "b2"],
            "perturbation": ["non-targeting", "TP53", "MDM2", "non-targeting"],
        }
    )
    for k, v in over.items():
        df[k] = v
    return df


def test_build_site_table_maps_and_flags_controls():
    p = Problems()
    t = build_site_table(_raw(), SiteColumns(), "m.csv", p)
    assert len(p) == 0
    assert list(t.columns[: len(REQUIRED_COLUMNS) + 1]) == ["site_id"] + REQUIRED_COLUMNS
    assert t["is_control"].tolist() == [True, False, False, True]
    assert t["perturbation_type"].tolist() == ["control", "gene", "gene", "control"]
    assert t["site_id"].tolist()[1] == "P1_A02_1"


def test_every_problem_is_reported_with_its_line_and_column():
    raw = _raw(well=["A01", "A01", "Q77", "A01"], site=["1", "1", "x", "1"], batch=["b1", "b1", "b1", "b2"])
    raw.loc[3, "perturbation"] = "TP53"  # batch b2 now has no control
    p = Problems()
    build_site_table(raw, SiteColumns(), "m.csv", p)
    text = [str(x) for x in p.items]
    assert any("line 4 column 'well'" in t and "Q77" in t for t in text)
    assert any("line 4 column 'site'" in t for t in text)
    assert any("duplicate site P1_A01_1 on lines 2, 3" in t for t in text)
    assert any("batch 'b2' has no control" in t for t in text)
    with pytest.raises(ValidationError) as e:
        p.raise_if_any()
    assert "\n" not in str(e.value) and "4 problems" in str(e.value)


def test_unknown_control_label_and_bad_type():
    raw = _raw(perturbation_type=["control", "gene", "enzyme", "control"])
    p = Problems()
    build_site_table(raw, SiteColumns(control_values=["non-targeting", "NTC"]), "m.csv", p)
    text = " | ".join(str(x) for x in p.items)
    assert "unknown control label 'NTC'" in text
    assert "line 4 column 'perturbation_type': 'enzyme'" in text
