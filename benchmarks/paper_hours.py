"""The paper on one GPU: every training run of the presets, its images x epochs, its stage's images/s and the
hours it takes, as a Markdown table (README, "The paper on one GPU").

Runs come from the presets themselves (``fairscan.config.list_presets``: every ``finetune`` and ``pretrain``
preset but the demo's; fine-tuning presets that share a run folder count once). FLOPs per training image are
counted from fairscan's own models and losses (``gpu_e2e.train_flops_per_image``: ``torch.utils.flop_counter``,
forward + backward). Images/s per stage come from a ``gpu_e2e.py --out`` JSON (``--measured``): its measured
figure where the stage was measured, else the FLOP-scaled estimate ``MFU x peak / FLOPs per image`` at the MFU
the measured ViT-B/16 fine-tuning reached. Without ``--measured`` every figure is such an estimate, at the MFU
of the issue's target (2,800 images/s for ViT-B/16 fine-tuning on an H200, about 30% of 989 TFLOP/s): the
hours the paper takes *if* that target is met, marked "estimate" in the table. Images per dataset are the
presets' own figures (the published CheXpert split; the other pools approximate, from the presets' headers).

    python benchmarks/paper_hours.py                                   # estimates only
    python benchmarks/paper_hours.py --measured e2e.json               # after gpu_e2e.py --out e2e.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_VIT_FT = 2800.0  # images/s: the target for ViT-B/16 fine-tuning on one H200
PEAK = 989e12
# training images per manifest folder (the train split; fine-tuning reads the train split, pre-training pools the
# train splits): CheXpert's published split (presets/_base.yaml); the rest as the presets' headers estimate them
IMAGES = {"chexpert": 76_205, "chexpert-balanced": 16_000, "nih": 78_000, "pool-cxpt-30pct": 23_000,
          "mimic": 236_000}  # fmt: skip
# the gpu_e2e configuration that measures each stage kind
MEASURED_BY = {"vit": ("vit_ft_compile", "vit_ft"), "resnet": ("bit_ft",), "probe": ("linear_probe",),
               "mae-0.75": ("mae_075",), "mae-0.9": ("mae_090",), "mocov3": ("mocov3",)}  # fmt: skip


def runs() -> list[dict]:
    """Every training run of the presets: name, stage kind, images per epoch, epochs, the settings to count."""
    from fairscan.config import list_presets
    from fairscan.models import arch_family, get_spec

    out, seen = [], set()
    for p in sorted(list_presets(), key=lambda p: p.name):
        if p.stage not in ("finetune", "pretrain") or p.name.startswith("demo"):
            continue
        s = getattr(p, p.stage)
        if p.stage == "finetune":
            if s.out in seen:
                continue
            seen.add(s.out)
            images = IMAGES[Path(s.manifest).name]
            family = arch_family(s.arch or get_spec(s.model).arch)
            kind = "probe" if s.linear_probe else family
        else:
            images = sum(IMAGES[Path(m).name] for m in s.manifests)
            kind = "mocov3" if s.method == "mocov3" else f"mae-{s.mask_ratio:g}"
        out.append({"preset": p.name, "stage": p.stage, "kind": kind, "images": images, "epochs": s.epochs})
    return out


def flops_per_kind(device: str = "cpu") -> dict[str, float]:
    """Training FLOPs per image of each stage kind, counted on fairscan's ViT-B/16 and ResNet-152x2 at 224 px."""
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_e2e import settings, train_flops_per_image

    args = argparse.Namespace(device=device, precision="auto", workers=0, image_size=224, arch="vit_base_patch16_224",
                              bit_arch="resnetv2_152x2_bit", batch=128, bit_batch=32, epochs=1, mlp_dim=4096,
                              decoder_dim=None)  # fmt: skip
    by_config = {"vit": "vit_ft", "resnet": "bit_ft", "probe": "linear_probe", "mae-0.75": "mae_075",
                 "mae-0.9": "mae_090", "mocov3": "mocov3"}  # fmt: skip
    out = {}
    for kind, config in by_config.items():
        stage, cfg = settings(config, args, Path("unused"), Path("unused-out"))
        out[kind] = train_flops_per_image(stage, cfg, torch.device(device))
    return out


def rates(flops: dict[str, float], measured: dict | None) -> dict[str, tuple[float, str]]:
    """(images/s, where it comes from) per stage kind."""
    configs = (measured or {}).get("configs", {})
    vit = next((configs[c] for c in MEASURED_BY["vit"] if c in configs), None)
    if vit is not None:
        mfu, basis = vit["images_per_s"] * flops["vit"] / PEAK, "estimate: FLOP-scaled from the measured ViT-B/16"
    else:
        mfu, basis = TARGET_VIT_FT * flops["vit"] / PEAK, "estimate: FLOP-scaled at the target MFU (no GPU measurement)"
    out = {}
    for kind, f in flops.items():
        hit = next((configs[c] for c in MEASURED_BY[kind] if c in configs), None)
        out[kind] = (hit["images_per_s"], "measured") if hit else (mfu * PEAK / f, f"{basis}, {mfu:.1%} MFU")
    return out


def table(rows: list[dict], flops: dict[str, float], speed: dict[str, tuple[float, str]]) -> str:
    lines = [
        "| preset | stage | images x epochs | GFLOPs / image | images/s on one H200 | hours | basis |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    total = 0.0
    for r in rows:
        ips, basis = speed[r["kind"]]
        hours = r["images"] * r["epochs"] / ips / 3600
        total += hours
        lines.append(
            f"| {r['preset']} | {r['stage']} ({r['kind']}) | {r['images']:,} x {r['epochs']} | "
            f"{flops[r['kind']] / 1e9:.1f} | {ips:,.0f} | {hours:,.1f} | {basis} |"
        )
    lines.append(f"| **total** | | | | | **{total:,.0f}** ({total / 24:,.1f} days) | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", type=Path, default=None, help="a gpu_e2e.py --out JSON")
    ap.add_argument("--device", default="cpu", help="where FLOPs are counted when the meta device cannot")
    args = ap.parse_args(argv)
    measured = json.loads(args.measured.read_text()) if args.measured else None
    flops = flops_per_kind(args.device)
    text = table(runs(), flops, rates(flops, measured))
    print(text)
    return text


if __name__ == "__main__":
    main()
