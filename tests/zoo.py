"""The test suite's models: every ``nn.Module`` the tests share, each with its formula in its docstring.

Families of architectures (CNNs, residual nets, UNets, LSTMs, transformers, structured outputs, keyword-only
calls, complex outputs, sampling) and models with one unusual behaviour each (a forward that raises, swallows
exceptions, writes its own parameters, runs a thread, goes NaN). Classes a single test defines inline to show one
behaviour stay beside that test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """conv(3->8) -> BN -> ReLU(inplace) -> conv(8->8, stride 2) -> ReLU -> flatten -> linear(8*4*4 -> 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.head(x.flatten(1))


class Signal1D(nn.Module):
    """conv1d(2->6, k=5) -> tanh -> conv1d(6->4, k=3, stride 2) on (B, 2, L) signals."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.act = nn.Tanh()
        self.conv2 = nn.Conv1d(6, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class TokenModel(nn.Module):
    """embed(V=20, D=8) -> linear(8->16) -> tanh -> mean over tokens -> linear(16->3) on (B, T) token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 16)
        self.act = nn.Tanh()
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.act(self.proj(self.embed(ids)))
        return self.head(h.mean(1))


class Shared(nn.Module):
    """The same linear(4->4) applied twice: y = lin(tanh(lin(x)))."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.act(self.lin(x)))


class TupleOut(nn.Module):
    """An LSTM(3->5) followed by linear(5->2) on its last output."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Raiser(nn.Module):
    """linear(4->4), then raises RuntimeError (a model whose forward fails after the first layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if getattr(self, "fail", True):
            raise RuntimeError("boom inside the model")
        return self.after(y)


class Swallower(nn.Module):
    """linear(4->4) inside `try: ... except Exception`, then linear(4->4) counted in `self.after_calls`."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)
        self.after_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            y = self.lin(x)
        except Exception:  # a model that swallows everything
            y = x
        self.after_calls += 1
        return self.after(y)


def mlp(width: int = 16, d_in: int = 6) -> nn.Sequential:
    """linear(d->w) -> ReLU(inplace) -> linear(w->w) -> tanh -> linear(w->3)."""
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(inplace=True), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, 3))


class ResBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) += x) with in-place ReLUs and an in-place residual add."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class ResNetTiny(nn.Module):
    """stem conv(3->c) -> BN -> ReLU(inplace) -> ResBlock(c) -> global mean -> linear(c->2)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.block = ResBlock(c)
        self.fc = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.relu(self.bn(self.stem(x)))).mean((2, 3)))


class UNetTiny(nn.Module):
    """enc conv(3->c) -> pool -> mid conv(c->2c) -> upsample -> cat(skip) -> dec conv(3c->c) -> out conv(c->3)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Sequential(nn.Conv2d(3 * c, c, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        m = self.up(self.mid(self.pool(e)))
        return self.out(self.dec(torch.cat([m, e], 1)))


class LSTMNet(nn.Module):
    """LSTM(3->h) (tuple output) -> linear(h->2) on the last step."""

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class TransformerNet(nn.Module):
    """linear(4->8) -> TransformerEncoder(1 layer, d=8, 2 heads, no dropout) -> linear(8->3)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.inp(x)))


class AttentionNet(nn.Module):
    """MultiheadAttention(8, 2 heads) returning (out, weights) -> linear(8->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x)
        return self.head(out)


class DictBlock(nn.Module):
    """{"feat": tanh(linear(x)), "aux": None, "scale": x.sum()} — a dict output with a None."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"feat": torch.tanh(self.lin(x)), "aux": None, "scale": x.sum(1)}


class DictNet(nn.Module):
    """block(x)["feat"] -> linear(6->2); returns {"logits": ..., "feat": ...}."""

    def __init__(self) -> None:
        super().__init__()
        self.block = DictBlock()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.block(x)["feat"]
        return {"logits": self.head(feat), "feat": feat}


@dataclasses.dataclass
class ModelOutput:
    """A Hugging Face-style output: a dataclass of tensors (and a None)."""

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    attentions: torch.Tensor | None = None


class DataclassBlock(nn.Module):
    """ModelOutput(last_hidden_state=linear(x), pooled=mean over tokens, attentions=None)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.lin(x)
        return ModelOutput(h, h.mean(1))


class DataclassNet(nn.Module):
    """encoder -> ModelOutput; head(linear 6->2) on pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = DataclassBlock()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).pooled)


SharedNet = Shared  # y = lin(tanh(lin(x))): one linear(4->4) used twice


class KwargsBlock(nn.Module):
    """y = scale * linear(x) + shift, called with keyword arguments only."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, *, x: torch.Tensor, scale: float, shift: torch.Tensor | None = None) -> torch.Tensor:
        y = scale * self.lin(x)
        return y if shift is None else y + shift


class KwargsNet(nn.Module):
    """block(x=x, scale=2) -> tanh -> block2(x=..., scale=0.5, shift=bias) — every submodule call keyword-only."""

    def __init__(self) -> None:
        super().__init__()
        self.block = KwargsBlock()
        self.act = nn.Tanh()
        self.block2 = KwargsBlock()
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.block(x=x, scale=2.0))
        return self.block2(x=h, scale=0.5, shift=self.bias)


class PaddedEncoderNet(nn.Module):
    """linear(4->8) -> nn.TransformerEncoder (eval fast path) with a padding mask over the last 2 of 5 tokens ->
    linear(8->3); the mask is built inside, so the fast path is taken without model_kwargs."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        mask[1:, 3:] = True
        return self.head(self.encoder(self.inp(x), src_key_padding_mask=mask).nan_to_num())


class Spectrum(nn.Module):
    """x -> rfft along the last dimension (complex output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x)


class ComplexNet(nn.Module):
    """linear(6->8) -> rfft (complex, 5 bins) -> |.| -> linear(5->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 8)
        self.fft = Spectrum()
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fft(self.lin(x)).abs())


class MaxNormTokens(TokenModel):
    """TokenModel whose embedding renormalises looked-up rows to norm <= 1 in place (nn.Embedding max_norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8, max_norm=1.0)


class SamplingNet(nn.Module):
    """linear(4->6) -> dropout(0.3) -> + 0.05 * N(0, 1) from torch's global RNG (a VAE's sampling) -> linear(6->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.3)
        self.dec = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.enc(x))
        return self.dec(h + 0.05 * torch.randn_like(h))


class Loop(nn.Module):
    """An RNN-style loop: h = tanh(cell(h) + x_t) for t in range(T)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 4)
        for t in range(x.shape[1]):
            h = torch.tanh(self.cell(h) + x[:, t])
        return h


class Stateful(nn.Module):
    """linear -> BatchNorm1d -> dropout(0.5); counts its calls in a buffer it *rebinds* (self.calls = calls + 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = self.calls + 1
        return self.drop(self.bn(self.lin(x)))


class GoesNaN(nn.Module):
    """linear(4->4), whose output becomes NaN from the `at`-th forward on (a model that blows up mid-run)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.at, self.n = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        y = self.lin(x)
        return y * float("nan") if self.n >= self.at else y


class Detaches(nn.Module):
    """b(a(x).detach()): the output of b does not depend differentiably on x."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).detach())


class Argmax(nn.Module):
    """argmax(linear(x)): an integer output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).argmax(1)


class Skips(nn.Module):
    """a(x); b is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x)


class ScriptedChild(nn.Module):
    """head(scripted mlp(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inner(x))


class SelfUpdating(nn.Module):
    """An embedding with max_norm (renormalises rows on lookup) and, in train mode, a parameter updated in place."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, max_norm=0.5)
        self.scale = nn.Parameter(torch.ones(4), requires_grad=False)
        self.lin = nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.mul_(0.9)
        return self.lin(self.emb(ids) * self.scale)


class Checkpointed(nn.Module):
    """c(checkpoint(b(a(x)))): a torch.utils.checkpoint region (use_reentrant=False) around a and b."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        return self.c(checkpoint(lambda h: self.b(self.a(h)), x, use_reentrant=False))


class Vmapped(nn.Module):
    """b(vmap(a)(x)): a applied per sample through torch.vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.vmap(self.a)(x))


class Threaded(nn.Module):
    """b(a(x)), with a run on a worker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import threading

        out: dict[str, torch.Tensor] = {}
        worker = threading.Thread(target=lambda: out.setdefault("h", self.a(x)))
        worker.start()
        worker.join()
        return self.b(out["h"])


class MetaBuffer(nn.Module):
    """a(x) + shift, where the buffer shift lives on the meta device (no data)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.register_buffer("shift", torch.zeros(4, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.shift


class OneSampleGoesNaN(nn.Module):
    """A linear map whose output for sample 0 (only) becomes NaN from the ``at``-th forward pass on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.at = at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.lin(x)
        if self.calls >= self.at:
            y = torch.cat([y[:1] * float("nan"), y[1:]])
        return y


class SignalGoesNaN(nn.Module):
    """A 1-D convolution whose output for sample 0 becomes NaN from the ``at``-th forward pass on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.at = at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.conv(x)
        if self.calls >= self.at:
            y = torch.cat([y[:1] * float("nan"), y[1:]])
        return y


class SkipAround(nn.Module):
    """A skip connection around ``inner``: its output is not all that feeds what follows."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Conv2d(3, 3, 3, padding=1)
        self.outer = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x) + x)


class Normalized(nn.Module):
    """model((x - mean) / std): what users wrote by hand before normalize= existed."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
