"""Write the published-runs suite (validate/published/*.yaml) from the public figures, reproducibly.

    python validate/published/transcribe.py [--data ../shared/data/published]

Each output file cites its source in the header and describes every row as a scenario in this
project's own format (the parallel-training fields use the names of issue #7: parallelism.tensor,
pipeline, virtual_stages, context, sequence_parallel; training.recompute, training.precision). Step
times that a source gives only as a rate are derived with the formula the source used (stated per
file). Selection rules are stated per file; nothing is selected by how well trsim predicts it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from trsim.validate.derive_presets import data_dir, read_csv  # noqa: E402

HERE = Path(__file__).resolve().parent
GiB = 2 ** 30
TEXT_TASK = {"text": {"samples": 1, "segments": [{"name": "text", "kind": "text", "tokens": None, "target": True}]}}


def task(seq: int) -> dict:
    return {"text": {"samples": 1, "segments": [{"name": "text", "kind": "text", "tokens": int(seq), "target": True}]}}


def gpt(h, L, heads, vocab, ffn=None, head_dim=None, tied=True, kv=None):
    return {"name": f"gpt-h{h}-L{L}", "num_layers": int(L), "hidden_size": int(h), "num_attention_heads": int(heads),
            "num_key_value_heads": int(kv or heads), "head_dim": int(head_dim or h // heads),
            "intermediate_size": int(ffn or 4 * h), "mlp": "gelu", "vocab_size": int(vocab),
            "tie_word_embeddings": tied}


def llama(h, L, heads, kv, ffn, vocab, name):
    return {"name": name, "num_layers": int(L), "hidden_size": int(h), "num_attention_heads": int(heads),
            "num_key_value_heads": int(kv), "head_dim": int(h) // int(heads), "intermediate_size": int(ffn),
            "mlp": "swiglu", "vocab_size": int(vocab), "tie_word_embeddings": False}


def parallel(tp=1, pp=1, cp=1, vp=1, sp=False, tp_overlap=False) -> dict:
    out = {}
    if int(tp) > 1:
        out["tensor"] = int(tp)
    if int(pp) > 1:
        out["pipeline"] = int(pp)
    if int(vp) > 1:
        out["virtual_stages"] = int(vp)
    if int(cp) > 1:
        out["context"] = int(cp)
    if sp and int(tp) > 1:
        out["sequence_parallel"] = True
        if tp_overlap:
            out["tensor_comm_overlap"] = True
    return out


def megatron_model_flops(B, s, L, h, V, ffn=None, kv_ratio=1.0, gated=False):
    """Megatron-LM's num_floating_point_operations (model FLOPs, forward + backward, full s x s attention)."""
    ffn = ffn or 4 * h
    return 12 * B * s * L * h * h * ((1 + kv_ratio + s / h) + ffn / h * (1.5 if gated else 1.0) + V / (2 * L * h))


def scenario(model, gpus, mb, gb, seq, par=None, training=None, hardware=None) -> dict:
    scn = {"name": model["name"], "model": model, "hardware": {"num_gpus": int(gpus), **(hardware or {})},
           "training": {"micro_batch_size": int(mb), "global_batch_size": int(gb), **(training or {})},
           "tasks": task(seq)}
    if par:
        scn["parallelism"] = par
    return scn


def fits_without_recompute(defaults: dict, scn: dict) -> bool:
    """Whether the run, as written (no recompute), fits in its GPU's memory by trsim's peak-memory model
    (within 5% median where sources publish memory). A source that leaves recompute unpublished ran with
    some when it does not fit; full recompute is then the assumption (selective keeps the MLP's activations)."""
    from trsim.simulator import scenario_from_dict
    from trsim.validate.runs import Run, _deep_merge
    run = Run("fit check", scenario_from_dict(_deep_merge(defaults, scn)), "baseline", {})
    return run.evaluate()["peak_memory_bytes"] <= run.hardware.memory_bytes


def dump(name: str, header: str, defaults: dict, runs: list[dict]) -> None:
    text = "".join(f"# {line}\n" if line else "#\n" for line in header.strip().splitlines())
    text += "# Written by: python validate/published/transcribe.py (do not edit by hand).\n"
    body = {"source": header.strip().splitlines()[0], "scenario_defaults": defaults, "runs": runs}
    (HERE / name).write_text(text + yaml.safe_dump(body, sort_keys=False, width=120))


# GPT-2/3-era stacks train with dropout 0.1 on the hidden states and the attention probabilities
DROPOUT_01 = {"hidden_dropout": 0.1, "attention_dropout": 0.1}


def vtrain(d):
    rows = read_csv("vtrain_megatron_deepspeed_a100_single_node.csv", d)
    # selection: per (GPUs, hidden, layers, TP, PP) the rows with the largest global batch at their largest
    # and smallest micro-batch; for TP or PP layouts only depths 12 and 24 and the smallest micro-batch
    groups = {}
    for r in rows:
        k = (r["num_gpus"], r["hidden size"], r["# layers"], r["tensor parallelism"], r["pipeline parallelism"])
        groups.setdefault(k, []).append(r)
    runs = []
    for k in sorted(groups, key=lambda k: tuple(int(x) for x in k)):
        g = sorted(groups[k], key=lambda r: (-int(r["global batch"]), int(r["micro batch"])))
        top = [r for r in g if r["global batch"] == g[0]["global batch"]]
        dp_only = k[3] == "1" and k[4] == "1"
        if not dp_only and k[2] not in ("12", "24"):
            continue
        for r in (top[0], top[-1]) if dp_only and len(top) > 1 else (top[0],):
            n, h, L, tp, pp, dp = (int(r[c]) for c in ("num_gpus", "hidden size", "# layers", "tensor parallelism",
                                                          "pipeline parallelism", "data parallelism"))
            mb, gb = int(r["micro batch"]), int(r["global batch"])
            name = f"vtrain-{n}g-h{h}-L{L}-tp{tp}-pp{pp}-dp{dp}-mb{mb}-gb{gb}"
            if any(x["name"] == name for x in runs):
                continue
            runs.append({"name": name, "scenario": scenario(gpt(h, L, 16, 50257), n, mb, gb, 1024, parallel(tp, pp)),
                         "measured": {"step_time_s": round(float(r["iteration time (ms)"]) / 1e3, 6)},
                         "tags": {"hidden": h, "layers": L, "gpus": n, "layout": f"tp{tp}-pp{pp}-dp{dp}"}})
    dump("vtrain_a100.yaml", """vTrain single-node A100: measured Megatron-DeepSpeed iteration times (ground truth of vTrain, MICRO 2024).
Source: github.com/VIA-Research/vTrain @f8dda84 data/ground_truth_single.csv (MIT), transcribed in
../shared/data/published/vtrain_megatron_deepspeed_a100_single_node.csv. 8x A100 SXM4 80GB node, NVLink;
fp16, full activation recompute, standard (non-flash) attention with fused softmax, Megatron's fused LayerNorm
and bias-GeLU kernels (kernels: fused), 1F1B, no gradient
bucketing (so gradient all-reduce is not overlapped: overlap_grad_reduce false). GPT-3 style: GELU 4h MLP, 16 heads,
vocab 50257, tied embeddings, sequence 1024. Dropout 0.1 on the attention probabilities and in both
bias-dropout-adds (Megatron-DeepSpeed's defaults; vTrain's model of the profiled layer, src/model/gpt_modeling.py,
applies both).
Selection: for every (GPUs, hidden, layers) data-parallel layout, the largest global batch at its smallest and
largest micro-batch; for TP/PP layouts, depths 12 and 24, largest global batch, smallest micro-batch.""", {"hardware": {"preset": "a100-sxm-80g", "attention_kernel": "math"},
                          "training": {"activation_checkpointing": True, "zero_stage": 0,
                                       "overlap_grad_reduce": False, "weight_bytes": 2,
                                       "gradient_bytes": 2, "optimizer_bytes": 12, "activation_bytes": 2,
                                       "kernels": "fused", **DROPOUT_01}}, runs)


def korthikanti(d):
    rows = read_csv("korthikanti2022_megatron_a100_via_calculon.csv", d)
    mem = {}
    for r in rows:
        if r["metric"].startswith("mem_"):
            mem.setdefault((r["model"], r["recompute"].split("(")[0]), 0.0)
            mem[(r["model"], r["recompute"].split("(")[0])] += float(r["measured"]) * GiB
    runs = []
    for r in rows:
        if r["metric"] != "iteration_time":
            continue
        rec = r["recompute"].split("(")[0]
        sel = rec == "seqsel"
        par = parallel(r["tp"], r["pp"], vp=r["pp_interleave"], sp=sel)
        model = gpt(r["hidden"], r["n_layers"], r["n_heads"], 51200, ffn=r["ffn"], head_dim=r["head_dim"])
        model["name"] = r["model"]
        meas = {"step_time_s": float(r["measured"])}
        if sel and (r["model"], "seqsel") in mem:
            meas["peak_memory_bytes"] = mem[(r["model"], "seqsel")]
        runs.append({"name": f"{r['model']}-{'selective-sp' if sel else 'full'}",
                     "scenario": scenario(model, r["n_gpus"], r["micro_batch"], r["global_batch"], r["seq_len"], par,
                                          {"recompute": "selective" if sel else "full"}),
                     "measured": meas, "tags": {"model": r["model"], "recompute": "selective" if sel else "full"}})
    dump("korthikanti_a100.yaml", """Korthikanti et al. 2022 (arXiv 2205.05198): Megatron-LM iteration time (Table 5) and per-GPU memory (Figure 1), A100.
As transcribed by github.com/calculon-ai/calculon @caa4b11 calculon/llm/validation.py (Apache-2.0), in
../shared/data/published/korthikanti2022_megatron_a100_via_calculon.csv. Selene, A100 SXM 80GB, fp16, 8 GPUs per
node; full recompute vs sequence parallel + selective (attention-core) recompute. GPT: GELU MLP, vocab 51200.
Peak memory (selective rows only) = the figure's weights+gradients+optimizer plus activations, GiB x 2^30; the
figure's memory is for micro-batch and layout of the same row. The recompute-none memory rows have no time and are
not runs. Megatron keeps fp32 main gradients (gradient_bytes 4). Dropout 0.1 on the attention probabilities and
the hidden states (Megatron-LM's defaults; the paper's activation accounting, Section 4.1, counts both masks).""",
         {"hardware": {"preset": "a100-sxm-80g", "attention_kernel": "math"},
          "training": {"stack": "megatron", "zero_stage": 0, "weight_bytes": 2, "gradient_bytes": 4,
                       "optimizer_bytes": 12, "activation_bytes": 2, **DROPOUT_01}}, runs)


def mcore(d):
    rows = [r for r in read_csv("megatron_lm_scaling_tables.csv", d) if r["table"] == "mcore_r0.8_h100_weak"]
    runs = []
    for r in rows:
        h, L, heads, V, s = int(r["hidden"]), int(r["n_layers"]), int(r["n_heads"]), int(r["vocab"]), int(r["seq_len"])
        gb, n = int(r["global_batch"]), int(r["n_gpus"])
        step = megatron_model_flops(gb, s, L, h, V) / (float(r["tflops_per_gpu"]) * 1e12 * n)
        model = gpt(h, L, heads, V, tied=False)
        model["name"] = f"gpt-{r['model']}"
        runs.append({"name": f"mcore-{r['model']}", "scenario": scenario(
            model, n, 1, gb, s, parallel(r["tp"], r["pp"], sp=True, tp_overlap=True)),
            "measured": {"step_time_s": round(step, 6)}, "tags": {"model": r["model"]}})
    dump("mcore_h100.yaml", """Megatron-Core r0.8 weak scaling on H100 (GPT 1.7B-462B, sequence 4096, vocab 131072), BF16.
Source: github.com/NVIDIA/Megatron-LM @d98e8a6 images/model_table.png (README "Performance Benchmarking"), in
../shared/data/published/megatron_lm_scaling_tables.csv. Step time derived: Megatron-LM's model FLOPs per step
(num_floating_point_operations: 12 B s L h^2 (2 + s/h + ffn/h + V/(2 L h))) / (TFLOP/s per GPU x GPUs).
Distributed optimizer (ZeRO-1), TP communication overlap, sequence parallel with TP, no recompute, TE
(cuDNN fused attention). The micro-batch is not published: 1 is assumed. GELU 4h MLP, untied embeddings.""",
         {"hardware": {"preset": "h100-sxm", "attention_kernel": "cudnn"},
          "training": {"stack": "megatron", "zero_stage": 1, "weight_bytes": 2, "gradient_bytes": 4,
                       "optimizer_bytes": 12, "activation_bytes": 2}}, runs)


# Narayanan et al. 2021 (arXiv 2104.04473) Table 1: attention heads per model; the README image the CSV was read
# from leaves them out (every one gives head dimension 96 to 160)
SELENE_HEADS = {"1.7B": 24, "3.6B": 32, "7.5B": 32, "18B": 48, "39B": 64, "76B": 80, "145B": 96, "310B": 128,
                "530B": 128, "1T": 160}


def selene(d):
    rows = [r for r in read_csv("megatron_lm_scaling_tables.csv", d) if r["table"] == "selene_a100_2021"]
    runs = []
    for r in rows:
        h, L, V, s = int(r["hidden"]), int(r["n_layers"]), int(r["vocab"]), int(r["seq_len"])
        gb, n = int(r["global_batch"]), int(r["n_gpus"])
        # the table counts the recomputed forward: 96 B s L h^2 (1 + s/(6h) + V/(16 L h))
        flops = 96 * gb * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
        step = flops / (float(r["tflops_per_gpu"]) * 1e12 * n)
        model = gpt(h, L, SELENE_HEADS[r["model"]], V)
        model["name"] = f"gpt-{r['model']}"
        pp = int(r["pp"])
        # interleaved (the paper's schedule for this table) with the fewest chunks a stage's layers allow
        vp = min(v for v in range(2, L + 1) if (L // pp) % v == 0) if pp > 1 else 1
        runs.append({"name": f"selene-{r['model']}", "scenario": scenario(
            model, n, 1, gb, s, parallel(r["tp"], pp, vp=vp), {"recompute": "full"}),
            "measured": {"step_time_s": round(step, 6)}, "tags": {"model": r["model"]}})
    dump("megatron_selene_a100.yaml", """Megatron-LM 2021 weak scaling on Selene A100 (GPT 1.7B-1T, sequence 2048, vocab 51200), fp16.
Source: Narayanan et al. 2021 (arXiv 2104.04473) Table 1, as shown in github.com/NVIDIA/Megatron-LM README
(images/cases_april2021.png, before f2e5db40), in ../shared/data/published/megatron_lm_scaling_tables.csv.
Step time derived: the table's FLOPs, which count the recomputed forward (96 B s L h^2 (1 + s/(6h) + V/(16 L h))),
/ (TFLOP/s per GPU x GPUs); end to end, data loading, optimizer and logging included. Full activation recompute,
tensor parallel inside a node and pipeline parallel across nodes (the split for model-parallel sizes above 8 is
the paper's Table 1: TP 8). The paper ran this table with the interleaved schedule and the scatter/gather
send; the number of chunks per stage is not published: the fewest a stage's layers allow is assumed (2, or
3 where a stage holds 15 or 3 layers). Data-parallel gradient all-reduce after the last micro-batch (no
overlap), gradients kept and all-reduced in fp16 (Megatron-LM's default for --fp16: fp32 accumulation needs
--accumulate-allreduce-grads-in-fp32, a switch that is off unless passed; the paper names none). Attention
heads from the paper's Table 1. The micro-batch is not published: 1 is assumed. GPT: GELU 4h MLP, tied
embeddings. Dropout 0.1 (Megatron-LM's defaults). Selection: every row of the table.""",
         {"hardware": {"preset": "a100-sxm-80g", "attention_kernel": "math"},
          "training": {"stack": "megatron", "zero_stage": 0, "overlap_grad_reduce": False, "weight_bytes": 2,
                       "gradient_bytes": 2, "optimizer_bytes": 12, "activation_bytes": 2, "kernels": "fused",
                       **DROPOUT_01}}, runs)


NEMO_MODELS = {"LLAMA2-7B": llama(4096, 32, 32, 32, 11008, 32000, "llama2-7b"),
               "LLAMA2-13B": llama(5120, 40, 40, 40, 13824, 32000, "llama2-13b"),
               "LLAMA2-70B": llama(8192, 80, 64, 8, 28672, 32000, "llama2-70b"),
               "LLAMA3-8B": llama(4096, 32, 32, 8, 14336, 128256, "llama3-8b"),
               "LLAMA3-70B": llama(8192, 80, 64, 8, 28672, 128256, "llama3-70b")}


def nemo(d):
    runs = []
    for r in read_csv("nvidia_nemo_megatron_h100.csv", d):
        key = r["model"].upper()
        if key not in NEMO_MODELS or r["task"] != "pretrain" or not r["tokens_per_s_per_gpu"]:
            continue  # LoRA/SFT (frozen weights), MoE and rate-only rows are not full pretraining steps
        n, gb, s = int(r["n_gpus"]), int(r["gbs"]), int(r["seq_len"])
        step = float(r["step_time_s"]) if r["step_time_s"] else gb * s / (float(r["tokens_per_s_per_gpu"]) * n)
        fp8 = r["precision"].startswith("FP8")
        fsdp = int(r["fsdp"] or 0) > 1
        par = parallel(r["tp"] or 1, r["pp"] or 1, cp=r["cp"] or 1, vp=r["vp"] if r["vp"] not in ("", "n/a") else 1,
                       sp=True)
        tr = {**({"precision": "fp8"} if fp8 else {}), "zero_stage": 3 if fsdp else 1,
              "stack": "huggingface" if r["source"].startswith("AutoModel") else "megatron"}
        if r["source"].startswith("AutoModel"):  # Hugging Face model code on Transformer Engine's kernels
            tr["kernels"] = "fused"
        runs.append({"name": f"{r['source'].split()[0].lower()}-{r['container']}-{r['model']}-{n}g-{r['precision'].split()[0]}",
                     "scenario": scenario(NEMO_MODELS[key], n, r["mbs"] or 1, gb, s, par, tr),
                     "measured": {"step_time_s": round(step, 6)},
                     "tags": {"model": key, "precision": "fp8" if fp8 else "bf16", "stack": r["source"].split()[0]}})
    defaults = {"hardware": {"preset": "h100-sxm", "attention_kernel": "cudnn"},
                "training": {"weight_bytes": 2, "gradient_bytes": 4, "optimizer_bytes": 12, "activation_bytes": 2}}
    for run in runs:
        if not fits_without_recompute(defaults, run["scenario"]):
            run["scenario"]["training"]["recompute"] = "full"
    dump("nemo_h100.yaml", """NVIDIA NeMo / Megatron-Bridge / NeMo AutoModel pretraining on DGX-H100 (Llama 2 and 3; FP8 and BF16).
Sources: github.com/NVIDIA/NeMo docs/source/performance/performance_summary.md @4c73f776..d31653f7 (24.07);
github.com/NVIDIA-NeMo/Megatron-Bridge docs/performance-summary-archive.md @067f987 (25.09, 25.11);
github.com/NVIDIA-NeMo/Automodel docs/performance-summary.mdx @36044ad (BF16, FSDP2); all Apache-2.0, in
../shared/data/published/nvidia_nemo_megatron_h100.csv. Step time = GBS x sequence / (tokens/s/GPU x GPUs) where the
source gives none. Selection: full pretraining of Llama models (LoRA/SFT keep base weights frozen, MoE is
not modelled, and the source table gives no shapes for its Nemotron and GPT-3 rows). Megatron rows: distributed optimizer (ZeRO-1), TE/cuDNN attention,
sequence parallel with TP, stack megatron; FSDP rows: ZeRO-3 (Megatron-Bridge's Megatron-FSDP keeps stack
megatron; AutoModel's FSDP2 over Hugging Face model code with Transformer Engine kernels, stack huggingface, kernels fused). Recompute per recipe is not published per row: none assumed, unless
the row does not fit in the H100's 80 GB without it by trsim's peak-memory model; then full recompute (the AutoModel Llama 3 70B
row: 147 GiB predicted without it).""", defaults, runs)


def flash(d):
    runs = []
    for r in read_csv("flashattention_repo_gpt_training_a100.csv", d):
        if r["metric"] != "throughput":
            continue
        h, L, heads, hd, s, n = (int(r[c]) for c in ("d_model", "n_layers", "n_heads", "head_dim", "seq_len", "n_gpus"))
        mb, tokens = int(r["micro_batch_per_gpu"]), int(r["global_batch_tokens"])
        gb = tokens // s
        zero = 1 if "ZeRO-1" in r["notes"] else 0
        model = gpt(h, L, heads, 50264, head_dim=hd)
        model["name"] = r["model"]
        runs.append({"name": f"flash-{r['model']}", "scenario": scenario(model, n, mb, gb, s, None, {"zero_stage": zero}),
                     "measured": {"step_time_s": round(tokens / float(r["value"]), 6)}, "tags": {"model": r["model"]}})
    dump("flashattention_a100.yaml", """FlashAttention repository GPT-3 training speed on 8x A100 SXM4 80GB (125M-2.7B, sequence 2048).
Source: github.com/Dao-AILab/flash-attention @0251105 training/README.md "Training speed" (BSD-3-Clause), in
../shared/data/published/flashattention_repo_gpt_training_a100.csv. Step time = global batch tokens / tokens per
second (8 GPUs). PyTorch Lightning DDP with bf16 autocast (fp32 weights, gradients and Adam moments), ZeRO-1 for
760M and above, no activation checkpointing, FlashAttention (v1 era, 2022), fused MLP and cross-entropy.
GPT-3 architecture: GELU 4h MLP, vocab 50257 padded to 50264, tied embeddings. Dropout 0.1 (the model config,
training/configs/model/gpt2.yaml, is a transformers.GPT2Config that keeps its default resid_pdrop and attn_pdrop),
fused into dropout-add-LayerNorm and into the attention kernel. The GPT-2 TFLOP/s rows carry no batch configuration
and are not runs.""",
         {"hardware": {"preset": "a100-sxm-80g", "attention_kernel": "flash1"},
          "training": {"weight_bytes": 4, "gradient_bytes": 4, "optimizer_bytes": 8, "activation_bytes": 2,
                       "kernels": "fused", **DROPOUT_01}}, runs)


SIMUMAX_MODELS = {"llama3-70b": (8192, 64, 8, 28672), "llama3-405b": (16384, 128, 8, 53248)}


def simumax(d):
    runs = []
    for r in read_csv("simumax_b200_megatron_measured.csv", d):
        if r["model"] not in SIMUMAX_MODELS:
            continue  # DeepSeek V2/V3 are mixture-of-experts models, not modelled
        h, heads, kv, ffn = SIMUMAX_MODELS[r["model"]]
        L = int(r["layer_num"])
        model = llama(h, L, heads, kv, ffn, 128256, f"{r['model']}-l{L}")
        tp, cp, pp, dp = (int(r[c]) for c in ("tp", "cp", "pp", "dp"))
        runs.append({"name": r["case"], "scenario": scenario(
            model, tp * cp * pp * dp, r["micro_batch"], r["global_batch"], r["seq_len"], parallel(tp, pp, cp, sp=True)),
            "measured": {"step_time_s": float(r["real_ms"]) / 1e3,
                         "peak_memory_bytes": round(float(r["real_alloc_gib"]) * GiB)},
            "tags": {"model": r["model"], "seq": int(r["seq_len"])}})
    dump("simumax_b200.yaml", """SimuMax B200: measured Megatron-LM step time and peak allocated memory on 8x B200 (layer-truncated Llama 3 70B/405B).
Source: github.com/MooreThreads/SimuMax @4dcaae5 docs/b200/b200_release_v1.2_summary.{md,json} (Apache-2.0), in
../shared/data/published/simumax_b200_megatron_measured.csv. Megatron-LM 23e00ed0, TE 2.11, bf16, distributed
optimizer (ZeRO-1), TE flash attention, sequence parallel, no recompute, fused cross-entropy, untied embeddings;
micro-batch 1. The launcher (simu_tools/megatron_scripts/scripts/run_pretrain_llama3.sh) passes neither
--overlap-grad-reduce nor --overlap-param-gather, and turns every TP communication overlap off: the gradient
reduce-scatter and the weight all-gather run exposed. Peak memory = peak torch allocated, GiB x 2^30 (max over
ranks). DeepSeek (MoE) rows not modelled.""",
         {"hardware": {"preset": "b200", "attention_kernel": "cudnn"},
          "training": {"stack": "megatron", "zero_stage": 1, "overlap_grad_reduce": False,
                       "overlap_param_gather": False, "weight_bytes": 2, "gradient_bytes": 4,
                       "optimizer_bytes": 12, "activation_bytes": 2}}, runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder of the published CSVs (default: ../shared/data/published)")
    a = p.parse_args(argv)
    d = Path(a.data) if a.data else data_dir()
    for f in (vtrain, korthikanti, mcore, selene, nemo, flash, simumax):
        f(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
