"""The GPU campaign in one command: profile the validation grid, calibrate, validate, and write
everything into one folder ready to commit (validate/data/<gpu>/ and calibrations/<gpu>.json).

    python -m trsim.profiler.campaign --out validate/data/h100 [--quick]

Grid (issue 4): llama-3.2-3b and llama-2-7b layer widths (4 profiled layers each, chosen to cover
every kind of layer); baseline, himix, hmgen with 3 and 5 shallow layers, drop and pyramid;
understanding and generation; micro-batches 1, 2, 4 (and 8 for 3B); 256 and 729 image tokens; plus a
full-depth llama-3.2-3b check (baseline, himix, unified) at micro-batch 8.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import yaml

SCHEDULES = {
    "baseline": {},
    "himix": {"understanding": {"method": "himix"}},
    "hmgen-3": {"generation": {"method": "hmgen", "shallow": 3}},
    "hmgen-5": {"generation": {"method": "hmgen", "shallow": 5}},
    "unified": {"understanding": {"method": "himix"}, "generation": {"method": "hmgen", "shallow": 5}},
    "drop": {"understanding": {"method": "drop", "from_layer": 2, "keep": 0.5}},
    "pyramid": {"understanding": {"method": "pyramid", "stages": [[2, 0.5], [8, 0.25], [16, 0.125]]}},
}


def scenario(model: str, image_tokens: int, micro_batch: int) -> dict:
    return {"name": f"grid-{model}-img{image_tokens}-b{micro_batch}", "model": {"preset": model},
            "hardware": {"preset": "h100-sxm", "num_gpus": 1},
            "training": {"micro_batch_size": micro_batch, "global_batch_size": micro_batch, "zero_stage": 0},
            "tasks": {"understanding": {"samples": 1, "segments": [
                          {"name": "system", "kind": "text", "tokens": 32},
                          {"name": "image", "kind": "image", "tokens": image_tokens},
                          {"name": "answer", "kind": "text", "tokens": 96, "target": True}]},
                      "generation": {"samples": 1, "segments": [
                          {"name": "system", "kind": "text", "tokens": 32},
                          {"name": "prompt", "kind": "text", "tokens": 64},
                          {"name": "image", "kind": "image", "tokens": image_tokens, "target": True}]}},
            "schedules": copy.deepcopy(SCHEDULES)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a small grid, to check the set-up")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "scenarios").mkdir(parents=True, exist_ok=True)
    grid = [(m, img, b) for m in ("llama-3.2-3b", "llama-2-7b") for img in (256, 729)
            for b in ((1, 2, 4, 8) if m == "llama-3.2-3b" else (1, 2, 4))]
    if args.quick:
        grid = [("llama-3.2-3b", 256, 1), ("llama-3.2-3b", 729, 2)]
    results = []
    trsim = [sys.executable, "-m", "trsim"]
    for m, img, b in grid:
        path = out / "scenarios" / f"{m}-img{img}-b{b}.yaml"
        path.write_text(yaml.safe_dump(scenario(m, img, b), sort_keys=False))
        res = out / f"{m}-img{img}-b{b}.json"
        subprocess.run(trsim + ["profile", str(path), "--device", args.device, "--layers", "4", "--repeats",
                                str(args.repeats), "--warmup", "5", "--no-fvcore", "--out", str(res)], check=False)
        if res.exists():
            results.append(str(res))
    full = out / "scenarios" / "llama-3.2-3b-full-depth.yaml"
    doc = scenario("llama-3.2-3b", 729, 8)
    doc["schedules"] = {k: SCHEDULES[k] for k in ("baseline", "himix", "unified")}
    full.write_text(yaml.safe_dump(doc, sort_keys=False))
    full_res = out / "llama-3.2-3b-full-depth.json"
    if not args.quick:
        subprocess.run(trsim + ["profile", str(full), "--device", args.device, "--repeats", "10", "--warmup", "3",
                                "--no-fvcore", "--out", str(full_res)], check=False)
    cal = out / "calibration.json"
    subprocess.run(trsim + ["calibrate", *results, "--out", str(cal)], check=False)
    subprocess.run(trsim + ["validate", *results, "--out", str(out / "validation.json"), "--plot",
                            str(out / "validation.png")], check=False)
    if full_res.exists():
        subprocess.run(trsim + ["validate", str(full_res), "--calibration", str(cal), "--out",
                                str(out / "full-depth-validation.json")], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
