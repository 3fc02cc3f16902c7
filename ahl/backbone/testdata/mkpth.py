#!/usr/bin/python3
"""Writes the PyTorch checkpoint fixtures of ahl/backbone's .pth reader tests (pth_test.go).

CI does not run this script: its output under testdata/pth is committed, so the Go tests need no
torch. It was run with Debian bookworm's python3-torch 1.13.1 and python3-torchvision 0.14.1
(`apt-get install python3-torch python3-torchvision`), from the repository root:

    /usr/bin/python3 ahl/backbone/testdata/mkpth.py ahl/backbone/testdata/pth

With --full it writes torchvision's own resnet18 (width 64, random weights, about 45 MB per
file, too big to commit) instead, for a local check of pipe's resnet18 against torchvision's:

    /usr/bin/python3 ahl/backbone/testdata/mkpth.py --full /tmp/pth-full
    PIPE_PTH_FIXTURES=/tmp/pth-full go test -count=1 -run TestPyTorchResNet18 -v ./ahl/backbone/

Files written (every weight is random, from fixed seeds, so a rerun gives the same values):

- resnet18_w4/zip.pth: the state dict of a resnet18 built from torchvision's own ResNet and
  BasicBlock classes at a sixteenth of the width (4, 8, 16, 32 channels instead of
  64, 128, 256, 512; fc to 10 classes), batch norm statistics randomised so that folding them
  matters, saved as torch.save does by default (the zip format of torch >= 1.6).
- resnet18_w4/legacy.pt: the same network converted to channels_last (so every 4-d weight is
  a non-contiguous strided view) and saved in the legacy format
  (_use_new_zipfile_serialization=False).
- resnet18_w4/ref.safetensors: "input" (2 images, 3 x 48 x 48, values in [0, 1]) and
  "features", torchvision's forward up to layer4 (conv1, bn1, relu, maxpool, layer1..layer4,
  eval mode) on them after the ImageNet normalisation, float32, 2 x 32 x 2 x 2.
- tensors/zip.pth and tensors/legacy.pt: the odd cases of a state dict (views with a storage
  offset and non-contiguous strides, float16, bfloat16 and float64, a 0-d and an empty tensor,
  an int64 num_batches_tracked), wrapped as {"state_dict": sd, "epoch": 3} in the zip file and
  {"model": sd, "note": "legacy"} in the legacy file; tensors/proto4.pth holds the state dict
  itself, pickled with protocol 4 (frames, memoize, stack globals); tensors/ref.safetensors
  holds the expected float32 values, contiguous.
- refused/namespace.pth: a checkpoint that pickles an argparse.Namespace beside the state dict
  (the reader must refuse the class by name); refused/torchscript.pt: a TorchScript archive.

The reference files are safetensors written by hand (below), as F32 little-endian.
"""

import argparse
import json
import os
import struct
import sys

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def write_safetensors(path, tensors):
    """Writes a dict of tensors as an F32 safetensors file (header padded to 8 bytes)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def resnet18(width):
    """Returns torchvision's resnet18 with base width `width` (64 is torchvision's own)."""
    if width == 64:
        m = torchvision.models.resnet18()  # torchvision's own, 1000 classes, random weights
    else:
        m = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)
        # ResNet.__init__ hard-codes 64, 128, 256, 512: rebuild the trunk with the same classes.
        m.inplanes = width
        m.conv1 = torch.nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        m.bn1 = torch.nn.BatchNorm2d(width)
        m.layer1 = m._make_layer(BasicBlock, width, 2)
        m.layer2 = m._make_layer(BasicBlock, 2 * width, 2, stride=2)
        m.layer3 = m._make_layer(BasicBlock, 4 * width, 2, stride=2)
        m.layer4 = m._make_layer(BasicBlock, 8 * width, 2, stride=2)
        m.fc = torch.nn.Linear(8 * width, 10)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
                mod.bias.copy_(-0.1 + 0.2 * torch.rand(c, generator=g))
                mod.running_mean.copy_(-0.1 + 0.2 * torch.rand(c, generator=g))
                mod.running_var.copy_(0.8 + 0.4 * torch.rand(c, generator=g))
                mod.num_batches_tracked.fill_(1234)
    return m.eval()


def features(m, x):
    """torchvision's resnet forward up to layer4, on images in [0, 1] normalised as pipe does."""
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    trunk = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    with torch.no_grad():
        return trunk(x)


def write_resnet(out, width, size):
    os.makedirs(out, exist_ok=True)
    m = resnet18(width)
    x = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(12))
    y = features(m, x)
    torch.save(m.state_dict(), os.path.join(out, "zip.pth"))
    cl = m.to(memory_format=torch.channels_last)
    sd = cl.state_dict()
    assert not sd["layer1.0.conv1.weight"].is_contiguous()
    torch.save(sd, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    # The channels_last network computes the same features, up to torch's own rounding.
    cl_diff = float((features(cl, x) - y).abs().max() / y.abs().max())
    assert cl_diff < 1e-5, cl_diff
    write_safetensors(os.path.join(out, "ref.safetensors"), {"input": x, "features": y})
    print(f"{out}: width {width}, input {tuple(x.shape)}, features {tuple(y.shape)}, |features| max {y.abs().max():.4g}, "
          f"channels_last vs contiguous in torch: {cl_diff:.3g} relative")


def write_tensors(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(13)
    big = torch.randn((4, 6), generator=g)
    sd = {
        "a": torch.randn((2, 3), generator=g),
        "offset": big[1:3, 2:5],  # storage offset 8, strides (6, 1): not contiguous
        "transposed": big.t(),  # shares big's storage, strides (1, 6)
        "expanded": torch.randn((3, 1), generator=g).expand(3, 4),  # stride 0
        "half": torch.randn((5,), generator=g).half(),
        "bf16": torch.randn((2, 2), generator=g).bfloat16(),
        "double": torch.randn((3,), generator=g).double(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros((0, 3)),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    from collections import OrderedDict
    sd = OrderedDict(sd)
    torch.save({"state_dict": sd, "epoch": 3}, os.path.join(out, "zip.pth"))
    torch.save({"model": sd, "note": "legacy"}, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(out, "proto4.pth"), pickle_protocol=4)
    write_safetensors(os.path.join(out, "ref.safetensors"),
                      {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")})
    print(f"{out}: {len(sd)} tensors")


def write_refused(out):
    os.makedirs(out, exist_ok=True)
    sd = {"w": torch.ones(2)}
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1)}, os.path.join(out, "namespace.pth"))
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), os.path.join(out, "torchscript.pt"))
    print(f"{out}: refused cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output folder (ahl/backbone/testdata/pth)")
    ap.add_argument("--full", action="store_true", help="write torchvision's full-width resnet18 (not committed)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}", file=sys.stderr)
    if args.full:
        write_resnet(os.path.join(args.out, "resnet18"), 64, 224)
        return
    write_resnet(os.path.join(args.out, "resnet18_w4"), 4, 48)
    write_tensors(os.path.join(args.out, "tensors"))
    write_refused(os.path.join(args.out, "refused"))


if __name__ == "__main__":
    main()
