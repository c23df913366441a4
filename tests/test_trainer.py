"""The trainer end to end on CPU: smoke config, resume, DDP with one gloo process."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from fundusfeat import R2D2Fundus
from fundusfeat.cli import main
from fundusfeat.features import models
from fundusfeat.training.config import config_from_dict, load_config
from fundusfeat.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.toml"


def _smoke(tmp_path: Path, **run: object):
    cfg = load_config(SMOKE)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(tmp_path), **run))


def test_cli_smoke_checkpoint_loads_in_detector(tmp_path: Path, retina: np.ndarray) -> None:
    code = main(["train", "--config", str(SMOKE), "--out-dir", str(tmp_path), "--steps", "2"])
    assert code == 0
    ckpt = tmp_path / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["model"] == "fast" and state["step"] == 2 and state["pairs_seen"] == 8
    det = R2D2Fundus.create(weights=str(ckpt), device="cpu", target_diameter=256)
    assert det.model == "fast" and not det.empty()
    assert state["near_rng"].dtype == torch.uint8  # the close negatives' stream resumes too
    kps, desc = det.detectAndCompute(retina, None)
    assert desc.shape == (len(kps), 128) and desc.dtype == np.float32


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = Trainer(_smoke(tmp_path / "a", steps=2)).fit()
    b_trainer = Trainer(_smoke(tmp_path / "b", steps=2))
    b = b_trainer.fit()
    assert a.history[-1]["loss"] == pytest.approx(b.history[-1]["loss"], rel=1e-5)
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    for k, v in b_trainer.net.state_dict().items():
        assert torch.allclose(sa[k], v, atol=1e-6), k


def test_resume_continues_counters_and_matches_uninterrupted(tmp_path: Path) -> None:
    full = Trainer(_smoke(tmp_path / "full", steps=4, val_every=0))
    full.fit()
    Trainer(_smoke(tmp_path / "part", steps=2, val_every=0)).fit()
    resumed = Trainer(
        _smoke(tmp_path / "part", steps=4, val_every=0), resume=tmp_path / "part" / "last.pt"
    )
    assert resumed.state.step == 2
    state = resumed.fit()
    assert state.step == 4 and state.pairs_seen == 16
    for k, v in full.net.state_dict().items():
        assert torch.allclose(resumed.net.state_dict()[k], v, atol=1e-5), k


def _scheduled(tmp_path: Path, steps: int):
    cfg = _smoke(tmp_path, steps=steps, val_every=0, log_every=1)
    return dataclasses.replace(
        cfg, optim=dataclasses.replace(cfg.optim, lr=1e-3, lr_milestones=(2, 3), lr_gamma=0.5)
    )


def test_lr_schedule_follows_the_step_count_across_a_resume(tmp_path: Path) -> None:
    seen: list[dict] = []
    full = Trainer(_scheduled(tmp_path / "full", 4))
    full.fit(progress=seen.append)
    assert [s["lr"] for s in seen if "lr" in s] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    Trainer(_scheduled(tmp_path / "part", 2)).fit()
    resumed = Trainer(_scheduled(tmp_path / "part", 4), resume=tmp_path / "part" / "last.pt")
    resumed.fit()
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    for k, v in full.net.state_dict().items():
        assert torch.allclose(resumed.net.state_dict()[k], v, atol=1e-5), k


def test_lr_schedule_is_validated() -> None:
    with pytest.raises(ValueError, match="lr_milestones"):
        config_from_dict({"optim": {"lr_milestones": [5, 3]}})
    with pytest.raises(ValueError, match="lr_gamma"):
        config_from_dict({"optim": {"lr_gamma": 0.0}})


def test_validation_reports_accuracy(tmp_path: Path) -> None:
    seen: list[dict] = []
    Trainer(_smoke(tmp_path, steps=4, val_every=2)).fit(progress=seen.append)
    vals = [s for s in seen if "val_mnn_accuracy" in s]
    assert len(vals) == 2
    assert all(0.0 <= v["val_mnn_accuracy"] <= 1.0 and np.isfinite(v["val_loss"]) for v in vals)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_single_gloo_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        trainer = Trainer(_smoke(tmp_path, steps=2, val_every=0))
        assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
        assert dist.get_backend() == "gloo"
        state = trainer.fit()
        assert state.step == 2 and (tmp_path / "last.pt").is_file()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_init_from_copies_matching_tensors(tmp_path: Path) -> None:
    """A new architecture starts from a trained one wherever names and shapes match."""
    source = tmp_path / "v1.pt"
    torch.manual_seed(3)
    v1 = models.get("fast-v1").build().state_dict()
    torch.save(v1, source)
    cfg = _smoke(tmp_path / "run", steps=1, val_every=0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(source)))
    net = Trainer(cfg).net.state_dict()
    assert torch.equal(net["enc8.0.0.weight"], v1["enc8.0.0.weight"])
    assert "full.0.weight" in net and "full.0.weight" not in v1
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, init_from=str(tmp_path / "no.pt"))
    )
    with pytest.raises(FileNotFoundError, match="init_from"):
        Trainer(cfg)


def test_new_loss_terms_train(tmp_path: Path) -> None:
    """Close negatives and the sub-pixel localisation loss run and report."""
    cfg = _smoke(tmp_path, steps=2, val_every=0)
    loss = dataclasses.replace(cfg.loss, near_negatives=2, loc_weight=0.1)
    state = Trainer(dataclasses.replace(cfg, loss=loss)).fit()
    last = state.history[-1]
    assert last["loc"] > 0 and np.isfinite(last["loss"]) and 0 <= last["mnn_accuracy"] <= 1


def test_lean_network_distilled_from_the_shipped_fast_network(tmp_path: Path) -> None:
    """The lean config's recipe on the smoke images: the distillation term is on, finite,
    and falls over a few steps on one batch at a high learning rate; the checkpoint loads
    as "lean"."""
    lean = load_config(ROOT / "training" / "configs" / "lean.toml")
    cfg = _smoke(tmp_path, steps=6, val_every=0, log_every=1)
    cfg = dataclasses.replace(
        cfg,
        model=lean.model,
        loss=dataclasses.replace(cfg.loss, distill_weight=1.0),
        optim=dataclasses.replace(cfg.optim, lr=3e-3),
    )
    trainer = Trainer(cfg)
    assert trainer.teacher is not None and not trainer.teacher.training
    # one fixed batch at every step: the term must fall as the student fits it (fresh
    # random crops at each step would vary it more than six steps of learning do)
    batch = trainer.sampler.batch(cfg.optim.micro_batch)
    trainer.sampler.batch = lambda n: batch
    state = trainer.fit()
    distill = [h["distill"] for h in state.history]
    assert all(np.isfinite(distill)) and distill[-1] < distill[0]
    det = R2D2Fundus.create(weights=str(tmp_path / "last.pt"), device="cpu", target_diameter=256)
    assert det.model == "lean"


def test_frozen_modules_keep_their_weights_and_statistics(tmp_path: Path) -> None:
    """``model.freeze``: the named modules neither learn nor update their BatchNorm
    statistics; the others train; an unknown name is an error that names the key."""
    cfg = _smoke(tmp_path, steps=2, val_every=0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, freeze=("stem", "enc8")))
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.fit()
    after = trainer.net.state_dict()
    for key, value in before.items():
        if key.startswith(("stem.", "enc8.")):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["enc4.0.0.weight"], before["enc4.0.0.weight"])
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, freeze=("encoder",)))
    with pytest.raises(ValueError, match="model.freeze"):
        Trainer(bad)


def test_lean_s1_recipe_trains_only_the_keypoint_branch(tmp_path: Path) -> None:
    """lean_s1.toml on the smoke images: the encoder is the shipped lean network's and
    stays so, the stride-1 branch learns, and the checkpoint loads as "lean-s1"."""
    recipe = load_config(ROOT / "training" / "configs" / "lean_s1.toml")
    cfg = _smoke(tmp_path, steps=2, val_every=0)
    cfg = dataclasses.replace(cfg, model=recipe.model, loss=recipe.loss)
    trainer = Trainer(cfg)
    lean = R2D2Fundus.create(model="lean", device="cpu").core.state_dict
    key_before = trainer.net.key[0][0].weight.clone()
    trainer.fit()
    own = trainer.net.state_dict()
    for name, value in lean.items():
        if name.split(".")[0] in ("stem", "enc4", "enc8", "clf"):
            assert torch.equal(own[name], value), name
    assert not torch.equal(trainer.net.key[0][0].weight, key_before)
    det = R2D2Fundus.create(weights=str(tmp_path / "last.pt"), device="cpu", target_diameter=256)
    assert det.model == "lean-s1"


def test_lean_dw_s1_recipe_starts_from_both_named_models(tmp_path: Path) -> None:
    """lean_dw_s1.toml: ``init_from`` lists lean-s1's weights, then lean-dw's; the
    network starts with lean-dw's encoder and lean-s1's keypoint branch, the encoder
    stays frozen and the branch trains; the checkpoint loads as "lean-dw-s1"."""
    recipe = load_config(ROOT / "training" / "configs" / "lean_dw_s1.toml")
    assert isinstance(recipe.model.init_from, tuple) and len(recipe.model.init_from) == 2
    cfg = _smoke(tmp_path, steps=2, val_every=0)
    cfg = dataclasses.replace(cfg, model=recipe.model, loss=recipe.loss)
    trainer = Trainer(cfg)
    dw = R2D2Fundus.create(model="lean-dw", device="cpu").core.state_dict
    s1 = R2D2Fundus.create(model="lean-s1", device="cpu").core.state_dict
    start = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    encoder = ("stem", "enc4", "enc8", "clf")
    for name, value in start.items():
        source = dw if name.split(".")[0] in encoder else s1
        assert torch.equal(value, source[name]), name
    trainer.fit()
    own = trainer.net.state_dict()
    for name, value in start.items():
        if name.split(".")[0] in encoder:
            assert torch.equal(own[name], value), name
    assert not torch.equal(own["key.0.0.weight"], start["key.0.0.weight"])
    det = R2D2Fundus.create(weights=str(tmp_path / "last.pt"), device="cpu", target_diameter=256)
    assert det.model == "lean-dw-s1"


def test_lean_dw_s1_shift_recipe_fine_tunes_the_shipped_branch(tmp_path: Path) -> None:
    """lean_dw_s1_shift.toml (an experiment, not shipped): starts from the shipped
    lean-dw-s1 weights, trains the keypoint branch with the pair terms on; its committed
    checkpoint loads as "lean-dw-s1"."""
    recipe = load_config(ROOT / "training" / "configs" / "lean_dw_s1_shift.toml")
    assert recipe.loss.pair_weight > 0 and recipe.loss.loc_weight > 0
    cfg = _smoke(tmp_path, steps=1, val_every=0)
    trainer = Trainer(dataclasses.replace(cfg, model=recipe.model, loss=recipe.loss))
    shipped = R2D2Fundus.create(model="lean-dw-s1", device="cpu").core.state_dict
    for name, value in trainer.net.state_dict().items():
        assert torch.equal(value, shipped[name]), name
    ckpt = ROOT / "training" / "checkpoints" / "lean_dw_s1_shift_last.pt"
    det = R2D2Fundus.create(weights=str(ckpt), device="cpu", target_diameter=256)
    assert det.model == "lean-dw-s1"


def test_init_from_must_be_paths() -> None:
    with pytest.raises(ValueError, match="model.init_from"):
        config_from_dict({"model": {"init_from": ["a.pt", ""]}})


def test_pure_distillation_ignores_the_pair_terms_gradient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``pair_weight = 0`` the pair terms are reported but never differentiated: an
    infinite one leaves the gradient finite (it used to enter it as 0 x inf = nan)."""
    from fundusfeat.training import objective

    lean = load_config(ROOT / "training" / "configs" / "lean.toml")
    cfg = _smoke(tmp_path, steps=1, val_every=0)
    cfg = dataclasses.replace(
        cfg, model=lean.model, loss=dataclasses.replace(lean.loss, pair_weight=0.0)
    )
    trainer = Trainer(cfg)
    real = objective.cosim_loss
    monkeypatch.setattr(objective, "cosim_loss", lambda *a: real(*a) * float("inf"))
    batch = trainer.sampler.batch(2)
    loss, terms = objective.batch_loss(
        trainer.net, batch, cfg.loss, (0.0, 0.0), None, trainer.teacher
    )
    loss.backward()
    grads = [p.grad for p in trainer.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert terms["cosim"] == float("inf") and terms["loss"] == pytest.approx(terms["distill"])


def test_resume_rejects_other_architecture(tmp_path: Path) -> None:
    Trainer(_smoke(tmp_path, steps=1, val_every=0)).fit()
    cfg = _smoke(tmp_path, steps=2)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="r2d2"))
    with pytest.raises(ValueError, match="resume"):
        Trainer(cfg, resume=tmp_path / "last.pt")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"modle": {}}, "unknown config section"),
        ({"run": {"stpes": 3}}, "unknown key"),
        ({"model": {"name": "vgg"}}, "model.name"),
        ({"loss": {"descriptor": "triplet"}}, "loss.descriptor"),
        ({"optim": {"batch_pairs": 8, "micro_batch": 3}}, "micro_batch"),
        ({"loss": {"near_radius": [4.0, 2.0]}}, "near_radius"),
        ({"loss": {"loc_weight": -1.0}}, "loc_weight"),
        ({"loss": {"distill_weight": 1.0}}, "model.teacher"),
        ({"model": {"teacher": "r2d2"}}, "model.teacher"),
        ({"loss": {"pair_weight": 0.0}}, "cannot both be 0"),
    ],
)
def test_config_validation(raw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_dict(raw)


def test_cli_train_bad_config_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nsteps = 0\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "run.steps" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
