"""SeMask-T FPN in plain PyTorch, written from ../shared/semask/SPEC.md: the speed peer of our
benchmarks (PyTorch CPU), and a way to make full-size ONNX models for them.

Parameter names and shapes are those of the official state_dict (SPEC section 4), so official
checkpoints and our fixtures load with `load_state_dict`. `check` verifies this re-implementation
against the official fixtures before anything is measured with it.

usage:
  python3 benches/semask_torch.py check FIXTURE_DIR            # tiny/tiny2 logits vs the official code
  python3 benches/semask_torch.py export OUT.onnx [--arch semask-t|tiny] [--size 512x1024]
                                                   [--seed 0]  # random init, logits output only
  python3 benches/semask_torch.py serve [--arch semask-t] [--size 512x1024] [--batch 1] [--threads 2]
      # the speed peer of train/benches/train_step.rs; on stdin:
      #   "forward N"  N eval-mode forwards (no grad)
      #   "train N"    N training steps: train-mode forward, CE(logits) + 0.4 CE(semantic) with
      #                255 ignored (upsampled to the labels, mean over all pixels), backward, AdamW
      # each answered by one JSON line {"times_ms": [...]}
"""
import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    # The Cityscapes SeMask-T FPN config (full_config.json).
    "semask-t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                     num_classes=19, decoder_channels=256),
    # The fixtures' config (tiny_config.json).
    "tiny": dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                 num_classes=19, decoder_channels=32),
}


def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows, ws, h, w):
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def shift_mask(hp, wp, ws, shift, device):
    """SPEC 1.2(a): [nW, ws*ws, ws*ws] with 0 inside a region and -100 across regions."""
    img = torch.zeros(hp, wp, device=device)
    label = 0
    for hs in (slice(0, hp - ws), slice(hp - ws, hp - shift), slice(hp - shift, hp)):
        for wsl in (slice(0, wp - ws), slice(wp - ws, wp - shift), slice(wp - shift, wp)):
            img[hs, wsl] = label
            label += 1
    m = window_partition(img.view(1, hp, wp, 1), ws).squeeze(-1)
    diff = m.unsqueeze(1) - m.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0, device=device), torch.tensor(0.0, device=device))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, ws):
        super().__init__()
        self.heads, self.ws, self.scale = heads, ws, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("relative_position_index", rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1])
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask):
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1 - self.p
        m = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * m / keep


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, ws, shift, drop_path):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x, h, w, mask):
        b, _, c = x.shape
        ws = self.ws
        u = self.norm1(x).view(b, h, w, c)
        hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
        u = F.pad(u, (0, 0, 0, wp - w, 0, hp - h))
        if self.shift:
            u = torch.roll(u, (-self.shift, -self.shift), dims=(1, 2))
        u = self.attn(window_partition(u, ws), mask if self.shift else None)
        u = window_reverse(u, ws, hp, wp)
        if self.shift:
            u = torch.roll(u, (self.shift, self.shift), dims=(1, 2))
        u = u[:, :h, :w, :].reshape(b, h * w, c)
        x = x + self.drop_path(u)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SemanticAttention(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.mlp_cls_q = nn.Linear(dim, classes)
        self.mlp_cls_k = nn.Linear(dim, classes)
        self.mlp_v = nn.Linear(dim, dim)
        self.mlp_res = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.1)

    def forward(self, u):
        s = self.mlp_cls_q(u)
        a = (s @ self.mlp_cls_k(u).transpose(-2, -1)).softmax(-1)
        f = self.drop(self.mlp_res(a @ self.mlp_v(u)))
        return s, self.gamma * f + u


class SWSeMaskBlock(nn.Module):
    def __init__(self, dim, classes, ws):
        super().__init__()
        self.ws = ws
        self.norm1 = nn.LayerNorm(dim)
        self.class_injection = nn.ModuleList([SemanticAttention(dim, classes)])

    def forward(self, x, h, w):
        b, _, c = x.shape
        ws = self.ws
        u = self.norm1(x).view(b, h, w, c)
        hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
        u = window_partition(F.pad(u, (0, 0, 0, wp - w, 0, hp - h)), ws)
        for blk in self.class_injection:
            s, u = blk(u)
        u = window_reverse(u, ws, hp, wp)[:, :h, :w, :].reshape(b, h * w, c)
        s = window_reverse(s, ws, hp, wp)[:, :h, :w, :].reshape(b, h * w, -1)
        return u, s


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, h, w):
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(self, dim, depth, heads, ws, classes, drop_paths, downsample):
        super().__init__()
        self.ws = ws
        self.blocks = nn.ModuleList(
            [SwinBlock(dim, heads, ws, 0 if j % 2 == 0 else ws // 2, drop_paths[j]) for j in range(depth)])
        self.semantic_layer = SWSeMaskBlock(dim, classes, ws)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x, h, w):
        ws = self.ws
        mask = shift_mask(math.ceil(h / ws) * ws, math.ceil(w / ws) * ws, ws, ws // 2, x.device)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        x, sem = self.semantic_layer(x, h, w)
        down = self.downsample(x, h, w) if self.downsample is not None else None
        return x, sem, down


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        _, _, h, w = x.shape
        x = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4))
        x = self.proj(x)
        hh, ww = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), hh, ww


class Backbone(nn.Module):
    def __init__(self, embed_dim, depths, num_heads, window_size, num_classes, drop_path_rate=0.3):
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(BasicLayer(embed_dim * 2 ** i, depth, num_heads[i], window_size, num_classes,
                                          dpr[sum(depths[:i]):sum(depths[:i + 1])], i < len(depths) - 1))
        for i in range(len(depths)):
            self.add_module(f"norm{i}", nn.LayerNorm(embed_dim * 2 ** i))
        self.dims = [embed_dim * 2 ** i for i in range(len(depths))]

    def forward(self, x):
        x, h, w = self.patch_embed(x)
        feats, sems = [], []
        for i, layer in enumerate(self.layers):
            out, sem, x = layer(x, h, w)
            b = out.shape[0]
            feats.append(getattr(self, f"norm{i}")(out).view(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
            sems.append(sem.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
            h, w = (h + 1) // 2, (w + 1) // 2
        return feats, sems


class ConvModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU()

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class Up2(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class BranchFPNHead(nn.Module):
    def __init__(self, in_channels, channels, num_classes):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)
        self.scale_heads = nn.ModuleList()
        for i, cin in enumerate(in_channels):
            mods = []
            for k in range(max(1, i)):
                mods.append(ConvModule(cin if k == 0 else channels, channels))
                if i > 0:
                    mods.append(Up2())
            self.scale_heads.append(nn.Sequential(*mods))

    def forward(self, feats, sems):
        y = self.scale_heads[0](feats[0])
        for i in range(1, len(feats)):
            y = y + resize(self.scale_heads[i](feats[i]), y.shape[2:])
        logits = self.conv_seg(self.dropout(y))
        z = sems[0]
        for i in range(1, len(sems)):
            s = sems[i]
            for _ in range(i):
                s = F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=False)
            z = z + resize(s, z.shape[2:])
        return logits, z


class SeMaskFPN(nn.Module):
    def __init__(self, embed_dim, depths, num_heads, window_size, num_classes, decoder_channels):
        super().__init__()
        self.backbone = Backbone(embed_dim, depths, num_heads, window_size, num_classes)
        self.decode_head = BranchFPNHead(self.backbone.dims, decoder_channels, num_classes)

    def forward(self, x):
        feats, sems = self.backbone(x)
        return self.decode_head(feats, sems)


class LogitsOnly(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def check(fixtures):
    ok = True
    for case in ["tiny", "tiny2"]:
        model = SeMaskFPN(**ARCHS["tiny"]).eval()
        missing, unexpected = model.load_state_dict(load_safetensors(Path(fixtures) / f"{case}.safetensors"), strict=True)
        x = torch.from_numpy(np.load(Path(fixtures) / f"{case}_input.npy"))
        with torch.no_grad():
            logits, sem = model(x)
        for name, ours in [("logits", logits), ("semantic", sem)]:
            ref = np.load(Path(fixtures) / f"{case}_{name}.npy")
            diff = float(np.abs(ours.numpy() - ref).max())
            ok &= diff <= 1e-4
            print(f"{case} {name}: max |diff| {diff:.2e}")
    sys.exit(0 if ok else 1)


def export(out, arch, size, seed):
    torch.manual_seed(seed)
    model = SeMaskFPN(**ARCHS[arch]).eval()
    h, w = size
    x = torch.randn(1, 3, h, w)
    torch.onnx.export(LogitsOnly(model), (x,), out, input_names=["input"], output_names=["logits"],
                      opset_version=17, do_constant_folding=True, dynamo=False)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {arch} at {h}x{w}, {params:,} parameters, random init (seed {seed})")


def serve(arch, size, batch, threads, device):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device)
    model = SeMaskFPN(**ARCHS[arch]).to(device)
    h, w = size
    x = torch.randn(batch, 3, h, w, device=device)
    y = torch.randint(0, ARCHS[arch]["num_classes"], (batch, h, w), device=device)
    y[:, : h // 16] = 255  # some ignored pixels, as in real labels
    no_decay = ("absolute_pos_embed", "relative_position_bias_table", "norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)]},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optim = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)

    def ce(logits):
        loss = F.cross_entropy(resize(logits, (h, w)), y, ignore_index=255, reduction="none")
        return loss.mean()  # mmseg v0.11: ignored pixels count as 0 in the mean

    def forward():
        model.eval()
        with torch.no_grad():
            logits, sem = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the kernels are asynchronous: time them, not their launch
        return logits

    def train():
        model.train()
        logits, sem = model(x)
        loss = ce(logits) + 0.4 * ce(sem)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        return loss.item()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": name}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        step = {"forward": forward, "train": train}.get(parts[0])
        if step is None or len(parts) != 2:
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
            continue
        times = []
        for _ in range(int(parts[1])):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
        print(json.dumps({"times_ms": times}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("fixtures")
    e = sub.add_parser("export")
    e.add_argument("out")
    e.add_argument("--arch", default="semask-t", choices=sorted(ARCHS))
    e.add_argument("--size", default="512x1024")
    e.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("serve")
    v.add_argument("--arch", default="semask-t", choices=sorted(ARCHS))
    v.add_argument("--size", default="512x1024")
    v.add_argument("--batch", type=int, default=1)
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    a = p.parse_args()
    if a.cmd == "check":
        check(a.fixtures)
        return
    h, w = (int(v) for v in a.size.lower().split("x"))
    if a.cmd == "export":
        export(a.out, a.arch, (h, w), a.seed)
    else:
        serve(a.arch, (h, w), a.batch, a.threads, a.device)


if __name__ == "__main__":
    main()
