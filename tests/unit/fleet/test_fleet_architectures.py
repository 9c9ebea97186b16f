"""One compatibility rule and one list of architectures, and everything that must agree with them.

Adding an architecture is one Architecture member with its machine names and Greengrass platform
(schemas/model.py) plus regenerated JSON schemas; until each recipe has a manifest for it and every
export tier lists it, the checks here fail and say what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
import yaml
from fleet_helpers import device, manifest, tier

from edgeloop.cloud.fleet.planning import choose_tier, model_updates
from edgeloop.demo.settings import DEMO_ARCHITECTURES
from edgeloop.greengrass_components.build import RECIPES_DIR
from edgeloop.greengrass_components.model_runner.agent import UpdateAgent
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime.scorer import PayloadRejected
from edgeloop.sagemaker_pipelines.steps.export import ALL_ARCHITECTURES, TIERS
from edgeloop.schemas import Architecture, Precision, load_use_case
from edgeloop.schemas.compatibility import (
    PRECISION_ORDER,
    KnownCapabilities,
    Mismatch,
    best_tier,
    incompatibility,
    most_precise_first,
)
from edgeloop.schemas.model import GREENGRASS_PLATFORMS, MACHINE_NAMES, architecture_of_machine

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
ALL_PRECISIONS = list(Precision)


# --- the rule ----------------------------------------------------------------------------------------


def test_a_device_that_fits_has_no_incompatibility():
    assert incompatibility(tier(Precision.FP32, [Architecture.X86_64]), device("gw-1")) is None


@pytest.mark.parametrize(
    ("overrides", "mismatch", "reason", "device_fact"),
    [
        (
            {"architecture": Architecture.ARMV7L},
            Mismatch.ARCHITECTURE,
            "architecture armv7l not in fp32 tier [x86_64, aarch64]",
            "device is armv7l",
        ),
        ({"runtime_version": "0.9.0"}, Mismatch.RUNTIME, "runtime 0.9.0 < 1.0.0 of fp32 tier", "runtime_version=0.9.0"),
        (
            {"supported_precisions": [Precision.QUANTIZED]},
            Mismatch.PRECISION,
            "precision fp32 not in supported precisions [quantized]",
            "device supports [quantized]",
        ),
    ],
)
def test_each_check_has_one_wording_for_the_fleet_and_the_device(overrides, mismatch, reason, device_fact):
    problem = incompatibility(
        tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64]), device("gw", **overrides)
    )
    assert (problem.mismatch, str(problem)) == (mismatch, reason)
    assert problem.refusal().startswith(f"{mismatch.value}: ") and device_fact in problem.refusal()
    assert reason in problem.refusal()


def test_checks_run_in_order_architecture_runtime_precision():
    old_arm = device(
        "gw", architecture=Architecture.ARMV7L, runtime_version="0.1.0", supported_precisions=["fp16-leaves"]
    )
    assert incompatibility(tier(Precision.FP32, [Architecture.X86_64]), old_arm).mismatch is Mismatch.ARCHITECTURE
    assert incompatibility(tier(Precision.FP32, [Architecture.ARMV7L]), old_arm).mismatch is Mismatch.RUNTIME


def test_what_is_not_known_is_not_checked():
    update = model_updates(manifest(), "dep-1", "models")[Precision.FP16_LEAVES]  # armv7l only, runtime 1.0.0
    old_x86 = device("gw", runtime_version="0.9.0")
    assert incompatibility(update, old_x86).mismatch is Mismatch.ARCHITECTURE
    # an update document older than the compatibility fields: only the precision can be checked
    legacy = update.model_copy(update={"architectures": None, "min_runtime_version": None})
    assert incompatibility(legacy, old_x86) is None
    assert incompatibility(legacy, device("gw", supported_precisions=["fp32"])).mismatch is Mismatch.PRECISION
    # a device agent that knows neither its architecture nor its runtime
    assert incompatibility(update, KnownCapabilities()) is None


def test_one_precision_order_most_precise_first():
    assert PRECISION_ORDER == (Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED)
    tiers = [tier(p, [Architecture.X86_64]) for p in reversed(PRECISION_ORDER)]
    assert [t.precision for t in most_precise_first(tiers)] == list(PRECISION_ORDER)
    chosen, problems = best_tier(tiers, device("gw", supported_precisions=["fp16-leaves", "quantized"]))
    assert chosen.precision is Precision.FP16_LEAVES and [p.mismatch for p in problems] == [Mismatch.PRECISION]


def _agent(architecture: Architecture, runtime_version: str) -> UpdateAgent:
    use_case = load_use_case("extrusion")
    return UpdateAgent(
        "gw",
        use_case,
        LiveScorer(use_case),
        lambda report: None,
        architecture=architecture,
        runtime_version=runtime_version,
    )


@pytest.mark.parametrize("architecture", list(Architecture))
@pytest.mark.parametrize("runtime_version", ["0.9.0", "1.0.0", "1.5.0"])
def test_the_planner_and_the_device_agent_apply_the_same_rule(architecture, runtime_version):
    """What the planner would send a device, the device accepts; what it would not, the device refuses."""
    model = manifest(
        [
            tier(Precision.FP32, [Architecture.X86_64], "1.0.0"),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L, Architecture.AARCH64], "1.2.0"),
        ]
    )
    gateway = device(
        "gw", architecture=architecture, runtime_version=runtime_version, supported_precisions=ALL_PRECISIONS
    )
    agent = _agent(architecture, runtime_version)
    chosen, _ = choose_tier(model, gateway)
    for precision, update in model_updates(model, "dep-1", "models").items():
        problem = incompatibility(update, gateway)
        if chosen is not None and precision is chosen.precision:
            assert problem is None
            agent._check_compatibility(update)  # accepted
        if problem is not None:
            with pytest.raises(PayloadRejected) as refused:
                agent._check_compatibility(update)
            assert refused.value.reason == problem.refusal()


# --- the list of architectures --------------------------------------------------------------------


def test_every_architecture_has_its_machine_names_and_greengrass_platform():
    assert set(MACHINE_NAMES) == set(Architecture) == set(GREENGRASS_PLATFORMS)
    machine_names = [name for names_ in MACHINE_NAMES.values() for name in names_]
    assert len(machine_names) == len(set(machine_names)), "a machine name maps to one architecture"
    for architecture, names_ in MACHINE_NAMES.items():
        assert architecture.value in names_  # a gateway told its architecture by name gets it back
        for name in names_:
            assert architecture_of_machine(name) is architecture
            assert architecture_of_machine(name.upper()) is architecture


def test_an_unknown_machine_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"machine architecture 'riscv64' is not one of \[.*'amd64'.*'arm64'"):
        architecture_of_machine("riscv64")


def recipe_platform_problems(recipe: Mapping, platforms: Mapping[str, str] = GREENGRASS_PLATFORMS) -> list[str]:
    """What keeps a recipe from running on every architecture: a missing or an unknown manifest platform."""
    present = [manifest_["Platform"]["architecture"] for manifest_ in recipe["Manifests"]]
    problems = [
        f"{recipe['ComponentName']}: no manifest for {architecture} (Platform.architecture {platform!r})"
        for architecture, platform in platforms.items()
        if platform not in present
    ]
    problems += [
        f"{recipe['ComponentName']}: manifest for {platform!r}, which no architecture is"
        for platform in present
        if platform not in platforms.values()
    ]
    return problems


def export_tier_problems(tier_architectures: Mapping[Precision, Iterable], architectures: Iterable) -> list[str]:
    """Which export tiers leave out an architecture, or list one that is not in the enum."""
    wanted = set(architectures)
    return [
        f"{precision.value} tier: missing {sorted(wanted - set(listed))}, unknown {sorted(set(listed) - wanted)}"
        for precision, listed in tier_architectures.items()
        if set(listed) != wanted
    ]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_has_a_manifest_for_every_architecture(path):
    assert recipe_platform_problems(yaml.safe_load(path.read_text())) == []


def test_the_recipe_check_reports_an_architecture_without_a_manifest():
    recipe = yaml.safe_load(RECIPES[0].read_text())
    without_arm = {**recipe, "Manifests": [m for m in recipe["Manifests"] if m["Platform"]["architecture"] != "arm"]}
    assert recipe_platform_problems(without_arm) == [
        f"{recipe['ComponentName']}: no manifest for armv7l (Platform.architecture 'arm')"
    ]
    # A new member (here a stand-in name) fails the check until the recipe gets its manifest.
    assert recipe_platform_problems(recipe, {**GREENGRASS_PLATFORMS, "riscv64": "riscv64"}) == [
        f"{recipe['ComponentName']}: no manifest for riscv64 (Platform.architecture 'riscv64')"
    ]


def test_every_export_tier_covers_exactly_the_architectures():
    assert set(ALL_ARCHITECTURES) == set(Architecture)
    assert export_tier_problems({p: spec.architectures for p, spec in TIERS.items()}, Architecture) == []


def test_the_export_check_reports_an_architecture_a_tier_leaves_out():
    tiers = {p: spec.architectures for p, spec in TIERS.items()}
    assert export_tier_problems(tiers, [*Architecture, "riscv64"]) == [
        f"{p.value} tier: missing ['riscv64'], unknown []" for p in tiers
    ]


def test_the_demo_fleet_has_every_architecture():
    assert set(DEMO_ARCHITECTURES) == set(Architecture)


def test_plans_use_the_one_rule():
    """The planner's reasons are the rule's, joined per tier in precision order."""
    model = manifest()
    arm_old = device("gw", architecture=Architecture.ARMV7L, runtime_version="0.5.0")
    chosen, reason = choose_tier(model, arm_old)
    expected = [str(incompatibility(t, arm_old)) for t in most_precise_first(model.tiers)]
    assert chosen is None and reason == "; ".join(expected)
