"""The work around a training step's math: clipping inside the fused AdamW (tasks/optim.clip_in_step) and
keeping freed memory for the next step (train/allocator.py). Both change no result."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch
from safetensors.torch import load_file

from lightft.options import Options
from lightft.tasks import module as task_module
from lightft.tasks.optim import clip_in_step, is_fused_adam
from lightft.train import allocator


def _pair(weight_decay: float, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    ours = [torch.randn(40, 30, dtype=dtype, requires_grad=True), torch.randn(30, dtype=dtype, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    make = lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=weight_decay, fused=True)  # noqa: E731
    return ours, ref, make(ours), make(ref)


@pytest.mark.parametrize("weight_decay,dtype", [(0.0, torch.float32), (0.01, torch.float32), (0.01, torch.bfloat16)])
@pytest.mark.parametrize("clips", ["never", "every other step"])
def test_clip_in_step_equals_clip_grad_norm_then_step(weight_decay, dtype, clips):
    """Clipped steps: the same parameters and `.grad` up to rounding; no clipping: exactly the same.
    bf16 parameters (--precision bf16-true) too."""
    ours, ref, opt, ref_opt = _pair(weight_decay, dtype)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    for step in range(6):
        clipped = clips != "never" and step % 2 == 0
        grads = [torch.randn_like(p) * (10.0 if clipped else 1e-3) for p in ours]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        norm = clip_in_step(opt, 1.0)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        opt.step()
        ref_opt.step()
        assert float(norm) == pytest.approx(float(ref_norm), rel=1e-6) and (float(norm) > 1.0) == clipped
        for p, q in zip(ours, ref):
            if clips == "never":
                assert torch.equal(p, q) and torch.equal(p.grad, q.grad)
            else:
                torch.testing.assert_close(p, q, **tol)
                torch.testing.assert_close(p.grad, q.grad, **tol)


def test_only_the_fused_adam_folds_the_clip():
    p = [torch.zeros(2, requires_grad=True)]
    assert is_fused_adam(torch.optim.AdamW(p, fused=True)) and is_fused_adam(torch.optim.Adam(p, fused=True))
    assert not is_fused_adam(torch.optim.AdamW(p, foreach=True))
    assert not is_fused_adam(torch.optim.SGD(p, lr=0.1))


def _train(out, sentiment, **kw) -> dict[str, torch.Tensor]:
    from lightft.train.run import train

    model, train_file, val_file = sentiment
    train("classify", Options(out=str(out), model=str(model), train=str(train_file), val=str(val_file), epochs=2,
                              batch_size=4, max_length=16, threads=1, progress=False, lora=False, lr=1e-3,
                              precision="32-true", seed=3, **kw))
    return load_file(str(out / "weights.safetensors"))


def test_a_training_run_clips_in_the_step_and_trains_the_same_weights(tmp_path, monkeypatch, sentiment):
    """`lightft train` with --grad-clip small enough to clip every step: the folded clip (kernels auto)
    trains the same weights as Lightning's clip_grad_norm_ (the fold switched off), up to rounding."""
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    folds = []
    monkeypatch.setattr(task_module, "clip_in_step", lambda opt, v: folds.append(v) or clip_in_step(opt, v))
    ours = _train(tmp_path / "a", sentiment, grad_clip=0.05)
    assert folds == [0.05] * 16  # every optimiser step: 2 epochs x 32 examples / batch 4
    monkeypatch.setattr(task_module, "is_fused_adam", lambda opt: False)  # Lightning's own clipping
    ref = _train(tmp_path / "b", sentiment, grad_clip=0.05)
    assert len(folds) == 16 and set(ours) == set(ref)
    for k in ours:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5)


def test_kernels_off_uses_lightnings_clipping(tmp_path, monkeypatch, sentiment):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    folds = []
    monkeypatch.setattr(task_module, "clip_in_step", lambda opt, v: folds.append(v))
    _train(tmp_path / "off", sentiment, grad_clip=0.05, kernels="off")
    assert folds == []


glibc_linux = pytest.mark.skipif(allocator.glibc() is None, reason="glibc's mallopt (Linux) only")


@glibc_linux
def test_freed_memory_stays_for_the_next_step(monkeypatch):
    """Inside the block a freed 64 MiB tensor's pages are reused by the next one (no new page faults)."""
    import resource

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # noqa: E731

    def fresh_tensor_faults() -> int:  # a step's pattern: the same 64 MiB tensor made and freed again
        counts = []
        for _ in range(6):  # the fewest: another allocation may sit between a freed block and the next request
            before = faults()
            torch.ones(1 << 24)
            counts.append(faults() - before)
        return min(counts)

    outside = fresh_tensor_faults()
    with allocator.reuse_freed_memory() as active:
        assert active
        inside = fresh_tensor_faults()
    assert outside > 10_000 and inside < outside // 10, (outside, inside)


class FakeLibc:
    """glibc's two malloc calls, recorded."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1

    def malloc_trim(self, pad: int) -> None:
        self.calls.append(("trim", pad))


def test_the_settings_come_back_and_freed_memory_is_returned_after_the_block(monkeypatch):
    libc = FakeLibc()
    calls = libc.calls
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with pytest.raises(KeyboardInterrupt):  # also when training stops with an exception
        with allocator.reuse_freed_memory() as active:
            assert active and sorted(calls) == sorted(allocator.KEEP.items())
            calls.clear()
            raise KeyboardInterrupt
    assert calls == [*allocator.GLIBC_DEFAULTS.items(), ("trim", 0)]


def test_freed_memory_is_left_alone_when_off_or_tuned_by_the_user(monkeypatch):
    libc = FakeLibc()
    calls = libc.calls
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    with allocator.reuse_freed_memory(enabled=False) as active:
        assert not active
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1000000")
    with allocator.reuse_freed_memory() as active:
        assert not active
    assert calls == []
    monkeypatch.setattr(allocator, "glibc", lambda: None)  # macOS, Windows, musl
    monkeypatch.delenv("GLIBC_TUNABLES")
    with allocator.reuse_freed_memory() as active:
        assert not active


def test_glibc_is_found_only_on_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.glibc() is None
    monkeypatch.setattr(ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    monkeypatch.setattr(sys, "platform", "linux")
    assert allocator.glibc() is None
