"""Sliders named by what they do: attribute directions fitted to face-mesh and pixel measures of the bundled model's
renders, the description of any direction set, and locked edits that hold other attributes still."""

import json

import numpy as np
import pytest
import torch
from conftest import run_main

import engine
import engine.assets
from engine.edit.attributes import AttributeMeter
from engine.edit.labelled import (
    HELD_OUT_SEED,
    boundaries_for,
    describe,
    fit_attribute_directions,
    lock,
    proposed_names,
    sample_attributes,
    summarize,
    sweep_effect,
)
from engine.errors import UserError

HELD = range(HELD_OUT_SEED, HELD_OUT_SEED + 12)


@pytest.fixture(scope="module")
def G():
    return engine.load_generator()


@pytest.fixture(scope="module")
def meter():
    return AttributeMeter()


@pytest.fixture(scope="module")
def samples(G, meter):
    return sample_attributes(G, 120, meter=meter, progress=False)


@pytest.fixture(scope="module")
def fitted(G, samples, meter):
    # All layers here (the CLI test below exercises the choice of a layer range).
    return fit_attribute_directions(G, samples, ("yaw", "brightness"), check_seeds=HELD, meter=meter, progress=False,
                                    layers=(0, G.num_ws - 1))


def test_renders_are_measured(samples):
    assert np.isfinite(samples.values["yaw"]).mean() > 0.9
    assert samples.std("yaw") > 0 and samples.std("brightness") > 0


def test_fitted_direction_moves_its_attribute_on_held_out_faces(G, fitted, samples, meter):
    d = fitted["yaw"]
    assert d.info["attribute"] == "yaw" and d.info["effect_per_alpha"]["yaw"] > 0
    ch = sweep_effect(G, d, range(HELD_OUT_SEED + 100, HELD_OUT_SEED + 112), ("yaw",), meter=meter)["yaw"]
    s = summarize(ch, samples.std("yaw"))
    assert s["same_way"] >= 0.9 and s["median_std"] > 0.5, s
    # The slider is calibrated to a visible change: at least the ±3 standard deviations of W along it, unless that
    # is further than typical faces lie from the mean of W (where faces break up).
    reach = float(np.median((samples.w - samples.w.mean(0)).norm(dim=1)))
    assert d.slider[1] >= min(3 * d.info["std"], reach) - 1e-3 and d.slider[1] <= reach + 1e-3


def test_describe_names_directions_by_their_measured_effect(G, fitted, samples, meter):
    from engine.io.directions import Direction, DirectionSet

    dset = DirectionSet.for_model(G)
    d = fitted["yaw"]
    dset.add(Direction("mystery", d.vector, d.layers, d.slider, "sefa"))
    result = describe(G, dset, samples, HELD, meter=meter, progress=False)
    r = result["mystery"]
    assert r["main_attribute"] == "yaw" and r["proposed_name"].startswith("mostly yaw")
    assert r["attributes"]["yaw"]["same_way"] >= 0.9
    assert proposed_names(result) == {"mystery": "yaw"}


def test_a_lock_holds_the_locked_attribute_still(G, fitted, samples, meter):
    """A direction that turns the head as it brightens the face: with yaw locked it still brightens, and the head
    turns far less."""
    from engine.io.directions import Direction

    b, y = fitted["brightness"], fitted["yaw"]
    v = b.vector + y.vector
    mixed = Direction("mixed", v / v.norm(), b.layers, b.slider, "test")
    locked = lock(mixed, [y])
    assert abs(float(locked.vector @ y.vector)) < 1e-5 and locked.info["locked"] == ["yaw"]
    free = sweep_effect(G, mixed, HELD, ("yaw", "brightness"), meter=meter)
    held = sweep_effect(G, mixed, HELD, ("yaw", "brightness"), meter=meter, locks=[y])
    assert abs(np.nanmedian(held["yaw"])) < 0.5 * abs(np.nanmedian(free["yaw"])), (held["yaw"], free["yaw"])
    assert summarize(held["brightness"], samples.std("brightness"))["median_std"] > 0.3
    # A direction is never locked against its own attribute.
    assert torch.equal(lock(y, [y]).vector, y.vector)
    with pytest.raises(UserError, match="no 'smile' boundary"):
        boundaries_for(fitted, ["smile"])


def test_session_locks_are_undoable(G, fitted):
    from engine.edit import EditSession

    with EditSession(G, fitted) as s:
        s.set_seed(3)
        s.set_alpha("brightness", 2.0)
        free = s.compute_ws().clone()
        s.set_locks(["yaw"])
        held = s.compute_ws().clone()
        assert not torch.equal(free, held)
        y = fitted["yaw"].vector
        a, b = fitted["brightness"].layers
        assert abs(float((held - s.compute_ws(s.state)).sum())) == 0
        # The change brightness makes has no component along yaw's boundary any more.
        base = s.map_seed(3)
        s_base = s.G.mapping.truncate(base[None], s.state.psi)
        assert abs(float((held - s_base)[0, a] @ y)) < 1e-4
        s.undo()
        assert torch.equal(s.compute_ws(), free) and s.state.locks == ()
        with pytest.raises(UserError, match="no 'smile' boundary"):
            s.set_locks(["smile"])


def test_layer_range_choice(G, fitted, meter):
    """Yaw is a head pose: the range chosen is one that includes the coarse layers, never the fine ones alone."""
    from engine.edit.labelled import choose_layers
    from engine.edit.layers import layer_groups

    rng = choose_layers(G, fitted["yaw"], "yaw", range(HELD_OUT_SEED, HELD_OUT_SEED + 6), meter)
    assert rng[0] == 0 and rng != layer_groups(G.num_ws)["fine"]


def test_cli_fit_describe_and_lock(tmp_path, fixtures):
    dirs = tmp_path / "dirs.npz"
    r = run_main("directions", "--method", "attributes", "--attributes", "yaw", "--layers", "all", "--samples",
                 "80", "--held-out", "8", "--out", dirs)
    assert r.returncode == 0, r.stderr
    assert "yaw" in r.stdout and "r2_held_out" in r.stdout
    report = tmp_path / "describe.png"
    r = run_main("directions", "--describe", dirs, "--samples", "40", "--held-out", "8", "--out", report)
    assert r.returncode == 0, r.stderr
    doc = json.loads(report.with_suffix(".json").read_text())
    assert set(doc) == {"yaw"} and doc["yaw"]["main_attribute"] == "yaw"
    assert report.stat().st_size > 1000 and "| yaw |" in report.with_suffix(".md").read_text()
    # --lock on the edit commands: a boundary the set lacks is one clear line.
    r = run_main("generate", "--seeds", "1", "--directions", dirs, "--edit", "yaw=+2", "--lock", "smile",
                 "--out", tmp_path / "x.png")
    assert r.returncode == 1 and "no 'smile' boundary" in r.stderr and r.stderr.count("\n") == 1
