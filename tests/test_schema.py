"""The offline schema check and its work-around for envoy-data-plane's field-name bug.

envoy-data-plane 2.2.0 (betterproto2) maps dict keys through `safe_snake_case`,
which turns `consecutive_5xx` into `consecutive_5_xx`: every proto field whose
name mixes digits and letters is "unknown", even in the library's own
`to_dict` output. compiler/validate/schema.py works around that in `parse`.

These tests prove (a) the bug is still there in the pinned version, so the
day an upgrade fixes it the first test fails and the work-around can go;
(b) the work-around parses such fields to the right value; (c) it does not
weaken the check; (d) `check_sidecar_dir` and `meshc validate` report a
bad field in compiled output with sidecar, file and resource.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import betterproto2
import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, OutlierDetection

from compiler import cli
from compiler.build import build
from compiler.validate.envoy import load_yaml
from compiler.validate.schema import SchemaError, check_message, check_sidecar_dir, parse
from compiler.write import write

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "envoy.config.cluster.v3.Cluster"
OUTLIER = "envoy.config.cluster.v3.OutlierDetection"


# --------------------------------------------------------------------------
# (a) the bug, without the work-around
# --------------------------------------------------------------------------


def test_pinned_version():
    assert version("envoy-data-plane") == "2.2.0", "the work-around in compiler/validate/schema.py targets 2.2.0"


def test_bug_proto_field_name_is_rejected():
    with pytest.raises(KeyError, match="consecutive_5_xx"):
        OutlierDetection.from_dict({"consecutive_5xx": 5})


def test_bug_nested_in_cluster_is_rejected():
    with pytest.raises(KeyError, match="consecutive_5_xx"):
        Cluster.from_dict({"name": "reviews", "outlier_detection": {"consecutive_5xx": 5}})


@pytest.mark.parametrize("casing", [betterproto2.Casing.CAMEL, betterproto2.Casing.SNAKE], ids=["camel", "snake"])
def test_bug_library_cannot_read_its_own_to_dict(casing):
    message = Cluster(name="reviews", outlier_detection=OutlierDetection(consecutive_5xx=5))
    data = message.to_dict(casing=casing)
    # its own output spells the field wrongly too ('consecutive5Xx' / 'consecutive_5_xx')...
    assert "consecutive_5xx" not in json.dumps(data)
    # ...and cannot be read back
    with pytest.raises(KeyError, match="Unknown field 'consecutive"):
        Cluster.from_dict(data)


def test_bug_fields_without_digits_are_fine():
    """The bug is only about digits next to letters: an ordinary field parses (so the tests above are specific)."""
    assert OutlierDetection.from_dict({"consecutive_gateway_failure": 3}).consecutive_gateway_failure == 3


# --------------------------------------------------------------------------
# (b) the work-around
# --------------------------------------------------------------------------


def test_parse_accepts_proto_field_name():
    cluster = parse(CLUSTER, {"name": "reviews", "outlier_detection": {"consecutive_5xx": 5}})
    assert isinstance(cluster, Cluster)
    assert cluster.outlier_detection.consecutive_5xx == 5


def test_parse_accepts_several_digit_fields_with_their_values():
    od = parse(OUTLIER, {"consecutive_5xx": 5, "enforcing_consecutive_5xx": 100, "consecutive_gateway_failure": 3})
    assert (od.consecutive_5xx, od.enforcing_consecutive_5xx, od.consecutive_gateway_failure) == (5, 100, 3)


def test_parse_still_accepts_camel_case_keys():
    """Keys that are not snake_case still go through the library's own conversion."""
    cluster = parse(CLUSTER, {"name": "reviews", "connectTimeout": "2s", "outlierDetection": {"consecutiveGatewayFailure": 3}})
    assert cluster.connect_timeout.total_seconds() == 2
    assert cluster.outlier_detection.consecutive_gateway_failure == 3


def test_work_around_is_scoped_to_parse():
    original = betterproto2.safe_snake_case
    parse(OUTLIER, {"consecutive_5xx": 5})
    assert betterproto2.safe_snake_case is original
    with pytest.raises(KeyError):
        parse(OUTLIER, {"no_such_field": 1})
    assert betterproto2.safe_snake_case is original
    with pytest.raises(KeyError):  # outside parse, the library is as buggy as before
        OutlierDetection.from_dict({"consecutive_5xx": 5})


def test_schema_check_wants_proto_field_names():
    """The work-around maps proto field names (snake_case: what meshc emits and Envoy's docs show).

    The proto-JSON spelling `consecutive5xx`, which Envoy also reads, still hits
    the library bug: without the message class at hand, a camelCase key with
    digits cannot be mapped back unambiguously (`http2ProtocolOptions` is
    `http2_protocol_options`, `consecutive5xx` is `consecutive_5xx`). meshc never
    emits it, so the schema check simply requires proto field names.
    """
    with pytest.raises(KeyError):
        parse(OUTLIER, {"consecutive5xx": 5})


# --------------------------------------------------------------------------
# (c) the schema check is kept
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, error",
    [
        ({"name": "reviews", "bogus_field": 1}, KeyError),
        ({"name": "reviews", "outlier_detection": {"consecutive_6xx": 5}}, KeyError),  # snake_case, digits, but no such field
        ({"name": "reviews", "outlier_detection": {"consecutive_5xx": 5, "bogus": 1}}, KeyError),
        ({"name": "reviews", "lb_policy": "NOT_A_POLICY"}, ValueError),
        ({"name": "reviews", "type": "STATIK"}, ValueError),
    ],
    ids=["unknown-field", "unknown-digit-field", "unknown-next-to-fixed", "wrong-enum", "wrong-enum-type"],
)
def test_parse_still_rejects(data, error):
    with pytest.raises(error):
        parse(CLUSTER, data)


def test_check_message_names_type_and_problem():
    errors = check_message(CLUSTER, {"name": "reviews", "lb_policy": "NOT_A_POLICY"}, "reviews/clusters.yaml")
    assert errors == [
        SchemaError("reviews/clusters.yaml", f"{CLUSTER}: Unknown value NOT_A_POLICY for enum ClusterLbPolicy")
    ]
    errors = check_message(CLUSTER, {"name": "reviews", "bogus_field": 1}, "x")
    assert errors == [SchemaError("x", f"{CLUSTER}: Unknown field 'bogus_field' in message Cluster.")]
    assert check_message(CLUSTER, {"name": "reviews", "outlier_detection": {"consecutive_5xx": 5}}, "x") == []


# --------------------------------------------------------------------------
# (d) compiled output: check_sidecar_dir and meshc validate
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    result = build(ROOT / "policies" / "basic")
    assert result.ok, [d.render() for d in result.diagnostics]
    out = tmp_path_factory.mktemp("schema") / "out"
    write(result.files, out)
    return out


@pytest.fixture
def out(compiled, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(compiled, copy)
    return copy


def _edit_first_cluster(path: Path, **fields) -> str:
    data = load_yaml(path)
    data["resources"][0].update(fields)
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return data["resources"][0]["name"]


def test_compiled_output_is_clean(out):
    sidecars = sorted(p.parent for p in out.rglob("bootstrap.yaml"))
    assert [d.name for d in sidecars] == ["productpage", "ratings", "reviews"]
    for d in sidecars:
        assert check_sidecar_dir(d, load_yaml) == []


def test_check_sidecar_dir_reports_sidecar_file_and_resource(out):
    name = _edit_first_cluster(out / "reviews" / "clusters.yaml", bogus_field=1)
    assert name == "inbound|reviews|v1"
    assert check_sidecar_dir(out / "reviews", load_yaml) == [
        SchemaError(
            "reviews/clusters.yaml: resources[0] 'inbound|reviews|v1'",
            f"{CLUSTER}: Unknown field 'bogus_field' in message Cluster.",
        )
    ]
    assert check_sidecar_dir(out / "ratings", load_yaml) == []


def test_check_sidecar_dir_accepts_digit_fields_in_compiled_output(out):
    _edit_first_cluster(out / "reviews" / "clusters.yaml", outlier_detection={"consecutive_5xx": 5})
    assert check_sidecar_dir(out / "reviews", load_yaml) == []


def test_meshc_validate_schema_only_fails_on_bogus_field(out, capsys):
    assert cli.main(["validate", "--schema-only", str(out)]) == 0
    capsys.readouterr()
    _edit_first_cluster(out / "reviews" / "clusters.yaml", bogus_field=1)
    assert cli.main(["validate", "--schema-only", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"schema: {out}/reviews/clusters.yaml: resources[0] 'inbound|reviews|v1': "
        f"{CLUSTER}: Unknown field 'bogus_field' in message Cluster.",
        "1 problem(s) in 3 sidecar(s)",
    ]


@pytest.mark.envoy
def test_meshc_validate_fails_on_bogus_field(out, capsys):
    """The full `meshc validate` (schema check, then the real Envoy) exits 1 and names the field."""
    _edit_first_cluster(out / "reviews" / "clusters.yaml", bogus_field=1)
    assert cli.main(["validate", str(out)]) == 1
    err = capsys.readouterr().err
    assert (
        f"schema: {out}/reviews/clusters.yaml: resources[0] 'inbound|reviews|v1': "
        f"{CLUSTER}: Unknown field 'bogus_field' in message Cluster."
    ) in err.splitlines()
    assert f"envoy: {out / 'reviews'}: rejected:" in err
    assert re.search(r"no\s+such\s+field:\s+'bogus_field'", err)  # Envoy pads its message unpredictably
    assert "productpage: rejected" not in err and "ratings: rejected" not in err
    assert err.splitlines()[-1] == "2 problem(s) in 3 sidecar(s)"


def test_a_duration_past_pythons_range_is_a_schema_error_not_a_crash():
    """Fuzz finding F3: `meshc validate` on output whose duration overflows Python's timedelta ended in exit 3."""
    cluster = {"name": "c", "connect_timeout": "359999999996400000s"}
    errors = check_message("envoy.config.cluster.v3.Cluster", cluster, "s/clusters.yaml")
    assert len(errors) == 1 and "Cluster" in errors[0].message, errors
