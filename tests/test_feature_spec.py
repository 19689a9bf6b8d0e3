from dataclasses import replace

from contracts.feature_spec import SPEC, FeatureGroup, FeatureSpec


def test_spec_has_59_features_in_group_order():
    assert len(SPEC.names) == 59
    assert len(set(SPEC.names)) == 59
    groups = [f.group for f in SPEC.features]
    assert groups == sorted(groups, key=[FeatureGroup.SPARSE_ID, FeatureGroup.SPARSE_SIDE, FeatureGroup.DENSE].index)
    assert [f.name for f in SPEC.in_group(FeatureGroup.SPARSE_ID)] == ["userid", "itemid"]
    assert len(SPEC.in_group(FeatureGroup.SPARSE_SIDE)) == 3 + 18
    assert len(SPEC.dense) == 36
    assert SPEC.names[2:5] == ("gender", "age", "occupation")
    assert SPEC.names[5] == "item_g1" and SPEC.names[22] == "item_g18"
    assert SPEC.names[23:25] == ("user_g1_imp", "user_g1_clk")


def test_types_and_cardinalities():
    assert all(f.dtype == "int32" for f in SPEC.sparse)
    assert all(f.dtype == "float32" and f.normalisation == "standard" for f in SPEC.dense)
    assert SPEC["gender"].cardinality == 3
    assert SPEC["age"].cardinality == 8
    assert SPEC["occupation"].cardinality == 22
    assert SPEC["item_g7"].cardinality == 2
    assert SPEC["userid"].cardinality is None  # decided by the data


def test_online_feature_sets():
    assert [f.name for f in SPEC.online_user_features][:3] == ["gender", "age", "occupation"]
    assert len(SPEC.online_user_features) == 3 + 36
    assert len(SPEC.online_item_features) == 18
    assert {f.name for f in SPEC.requiring("demographics")} == {"gender", "age", "occupation"}


def test_version_is_stable_and_follows_content():
    assert SPEC.version == FeatureSpec(SPEC.features).version
    renamed = (replace(SPEC.features[0], name="user_id"), *SPEC.features[1:])
    assert FeatureSpec(renamed).version != SPEC.version
    reordered = (SPEC.features[1], SPEC.features[0], *SPEC.features[2:])
    assert FeatureSpec(reordered).version != SPEC.version
