#!/usr/bin/env python3
"""Prints alignflow.json and pytorch.json side by side (bench/compare.sh runs
it) and optionally writes the comparison as JSON. With several --dir (runs of
both on the same fixtures), times are the median over the runs and the
per-run ratios are listed. Exits 3 when a correctness check fails in any run:
the two implementations disagree on the initial loss of a training stage, on
replayed generation log-probabilities, or on the recorded REINFORCE
iterations."""

import argparse
import copy
import json
import os
import statistics
import sys

STAGES = ["policy_train_step", "reward_train_step", "generation_batch1", "generation_batch16", "reinforce_iteration",
          # the scale benchmark's (harness -model smollm2-135m)
          "policy_train_step_lora", "prefill_batch1", "prefill_batch16", "decode_batch1", "decode_batch16"]
PREFILL_LOGIT_RTOL = 1e-4  # prefill logits: max abs diff over max abs logit
INITIAL_LOSS_RTOL = 1e-4   # same weights, same batch: must agree
FINAL_LOSS_RTOL = 1e-2     # after N steps: should be close (float rounding accumulates)
LOGPROB_ATOL = 1e-4
RL_LOSS_RTOL = 1e-3
OTHER_CPU_WARN = 0.2       # cores used by other processes during a stage


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def load(d):
    with open(os.path.join(d, "alignflow.json")) as f:
        af = json.load(f)
    with open(os.path.join(d, "pytorch.json")) as f:
        pt = json.load(f)
    return af, pt


def merge(reports):
    """One report whose per-stage times are medians over the runs (peaks and
    other-CPU maxima); losses, checks and the rest come from the first run."""
    m = copy.deepcopy(reports[0])
    for st, r in m["stages"].items():
        rs = [x["stages"][st] for x in reports if st in x["stages"]]
        for k in ("seconds_median", "throughput", "work_per_step_median"):
            r[k] = statistics.median(x[k] for x in rs)
        for k in ("peak_rss_mb", "other_cpu_cores"):
            r[k] = max(x.get(k, 0.0) for x in rs)
        if "peak_cuda_mb" in r:
            r["peak_cuda_mb"] = max(x.get("peak_cuda_mb", 0.0) for x in rs)
        if "breakdown" in r:
            r["breakdown"] = {part: statistics.median(x["breakdown"][part] for x in rs) for part in r["breakdown"]}
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, action="append", help="a run's directory; repeat for several runs")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    runs = [load(d) for d in args.dir]
    af, pt = merge([r[0] for r in runs]), merge([r[1] for r in runs])
    failures, noisy = [], []
    out = {}
    print()
    print(f"alignflow: {af['backend']}, {af['go_version']}, GOMAXPROCS={af['gomaxprocs']}; {af['cpu']}")
    cuda = pt.get("device") == "cuda"
    if cuda:
        where = f"device cuda ({pt.get('device_name', 'unknown GPU')}, CUDA {pt.get('cuda_version')}, TF32 off)"
    else:
        where = f"{pt['torch_threads']} torch thread(s) x {pt['blas_threads']} OpenBLAS thread(s)"
    print(f"pytorch:   torch {pt['torch_version']}, {where}; {'quick' if af['quick'] else 'full'} run, {af['date']}")
    if af.get("model"):
        print(f"model:     {af['model']} (randomly initialised, random tokens; see bench/README.md)")
    if len(runs) > 1:
        print(f"{len(runs)} runs on the same fixtures ({runs[0][0]['date']} to {runs[-1][1]['date']}): times are medians "
              f"over the runs, per-run ratios on the right")
    print()
    hdr = (f"{'stage':<22} {'alignflow s':>12} {'pytorch s':>10} {'ratio':>7}  {'alignflow':>10} {'pytorch':>10} "
           f"{'unit':<9} {'peak MiB af/pt':>15} {'steps':>6}" + ("  per-run ratios" if len(runs) > 1 else ""))
    print(hdr)
    print("-" * len(hdr))
    for st in STAGES:
        a, p = af["stages"].get(st), pt["stages"].get(st)
        if a is None or p is None:
            continue
        ratio = a["seconds_median"] / p["seconds_median"]
        ratios = [x["stages"][st]["seconds_median"] / y["stages"][st]["seconds_median"] for x, y in runs
                  if st in x["stages"] and st in y["stages"]]
        print(f"{st:<22} {a['seconds_median']:12.4f} {p['seconds_median']:10.4f} {ratio:7.1f}  {a['throughput']:10.1f} "
              f"{p['throughput']:10.1f} {a['unit']:<9} {a['peak_rss_mb']:7.0f}/{p['peak_rss_mb']:<7.0f} "
              f"{a['warmup']}+{a['steps']:<3}" + ("  " + " ".join(f"{x:.1f}" for x in ratios) if len(runs) > 1 else ""))
        row = {"alignflow_s": a["seconds_median"], "pytorch_s": p["seconds_median"], "ratio": ratio, "unit": a["unit"],
               "alignflow_throughput": a["throughput"], "pytorch_throughput": p["throughput"],
               "alignflow_peak_rss_mb": a["peak_rss_mb"], "pytorch_peak_rss_mb": p["peak_rss_mb"],
               "warmup": a["warmup"], "steps": a["steps"], "quick": af["quick"], "date": af["date"], "runs": len(runs)}
        if len(runs) > 1:
            row["ratios"] = ratios
        if "peak_cuda_mb" in p:
            row["pytorch_peak_cuda_mb"] = p["peak_cuda_mb"]
        row["alignflow_other_cpu_cores"] = a.get("other_cpu_cores", 0.0)
        row["pytorch_other_cpu_cores"] = p.get("other_cpu_cores", 0.0)
        busy = max(row["alignflow_other_cpu_cores"], row["pytorch_other_cpu_cores"])
        if busy > OTHER_CPU_WARN:
            noisy.append(f"{st} ({busy:.2f} cores)")
        for k in ("decode_steps", "ended_fraction"):
            if k in a.get("extra", {}) and k in p.get("extra", {}):
                row[f"alignflow_{k}"], row[f"pytorch_{k}"] = a["extra"][k], p["extra"][k]
        if "initial_loss" in a and "initial_loss" in p:
            row.update(alignflow_initial_loss=a["initial_loss"], pytorch_initial_loss=p["initial_loss"],
                       alignflow_final_loss=a["final_loss"], pytorch_final_loss=p["final_loss"])
        out[st] = row
    if noisy:
        print(f"  WARNING: other processes used CPU during: {', '.join(noisy)}; those timings are skewed")
    if cuda:
        peaks = [f"{st} {r['pytorch_peak_cuda_mb']:.1f}" for st, r in out.items() if "pytorch_peak_cuda_mb" in r]
        print("  pytorch ran on cuda: its peak MiB above is host RSS (CUDA context included); peak CUDA memory "
              "allocated (MiB): " + ", ".join(peaks))
    for st in ("generation_batch1", "generation_batch16"):
        if st in out and "alignflow_decode_steps" in out[st]:
            r = out[st]
            print(f"  {st}: decode steps per call {r['alignflow_decode_steps']:.1f} (alignflow) vs "
                  f"{r['pytorch_decode_steps']:.1f} (pytorch); both sample, so lengths differ a little")

    print()
    hdr = f"{'loss':<22} {'alignflow first':>16} {'pytorch first':>14} {'rel diff':>9}  {'alignflow last':>15} {'pytorch last':>13} {'rel diff':>9}"
    print(hdr)
    print("-" * len(hdr))
    for st in ("policy_train_step", "policy_train_step_lora", "reward_train_step", "reinforce_iteration"):
        r = out.get(st)
        if not r or "alignflow_initial_loss" not in r:
            continue
        d0 = rel(r["alignflow_initial_loss"], r["pytorch_initial_loss"])
        d1 = rel(r["alignflow_final_loss"], r["pytorch_final_loss"])
        r["initial_loss_rel_diff"], r["final_loss_rel_diff"] = d0, d1
        if st == "reinforce_iteration":
            # Each implementation samples its own rollouts, so losses differ;
            # the replay check below compares them on the same rollouts.
            del r["initial_loss_rel_diff"], r["final_loss_rel_diff"]
            print(f"{st:<22} {r['alignflow_initial_loss']:16.6f} {r['pytorch_initial_loss']:14.6f} {'-':>9}  "
                  f"{r['alignflow_final_loss']:15.6f} {r['pytorch_final_loss']:13.6f} {'-':>9}  (own samples; see the replay check)")
            continue
        note = ""
        a, p = af["stages"][st]["losses"], pt["stages"][st]["losses"]
        r["loss_curve_max_rel_diff"] = max(rel(x, y) for x, y in zip(a, p))
        if d0 > INITIAL_LOSS_RTOL:
            failures.append(f"{st}: initial loss {r['alignflow_initial_loss']} vs {r['pytorch_initial_loss']}")
        if d1 > FINAL_LOSS_RTOL:
            note = "  WARNING: final losses differ"
        print(f"{st:<22} {r['alignflow_initial_loss']:16.6f} {r['pytorch_initial_loss']:14.6f} {d0:9.1e}  "
              f"{r['alignflow_final_loss']:15.6f} {r['pytorch_final_loss']:13.6f} {d1:9.1e}{note}")

    ab = af["stages"].get("reinforce_iteration", {}).get("breakdown")
    pb = pt["stages"].get("reinforce_iteration", {}).get("breakdown")
    if ab and pb:
        print()
        print("reinforce_iteration by part (s; alignflow: each part timed alone after the run, pytorch: mean over the timed iterations):")
        parts = ["generate", "score", "logprobs", "update"]
        for part in parts:
            if part in ab and part in pb:
                print(f"  {part:<10} {ab[part]:8.3f} {pb[part]:8.3f}  ratio {ab[part] / pb[part]:5.1f}")
        out["reinforce_iteration"]["alignflow_breakdown_s"] = ab
        out["reinforce_iteration"]["pytorch_breakdown_s"] = pb

    checks = pt.get("checks", {})
    print()
    print("correctness checks (PyTorch replaying alignflow's recorded outputs on the same weights):")
    for st in ("generation_batch1", "generation_batch16"):
        c = checks.get(st)
        if c is None:
            continue
        print(f"  {st}: {c['replayed_tokens']} sampled tokens replayed, log-prob max abs diff {c['logprob_max_abs_diff']:.1e}")
        if st in out:
            out[st]["logprob_max_abs_diff"] = c["logprob_max_abs_diff"]
    for st in ("prefill_batch1", "prefill_batch16"):
        c = checks.get(st)
        if c is None:
            continue
        print(f"  {st}: first row's logits max abs diff {c['logit_max_abs_diff']:.1e} (largest logit "
              f"{c['logit_max_abs']:.1f}); greedy decoding agrees on the first {c['greedy_agreeing_min']} of "
              f"{c['greedy_tokens']} tokens in every row")
        if st in out:
            out[st]["logit_max_abs_diff"] = c["logit_max_abs_diff"]
            out[st]["greedy_agreeing_min"] = c["greedy_agreeing_min"]
    for c in checks.get("reinforce_iteration", []):
        print(f"  reinforce iteration {c['iteration']}: loss {c['alignflow_loss']:.8f} vs {c['pytorch_loss']:.8f} "
              f"(rel {c['loss_rel_diff']:.1e}), KL mean {c['alignflow_kl_mean']:.6f} vs {c['pytorch_kl_mean']:.6f}, "
              f"grad norm {c['alignflow_grad_norm']:.6f} vs {c['pytorch_grad_norm']:.6f}, max abs diff: reward "
              f"{c['reward_max_abs_diff']:.1e} kl {c['kl_max_abs_diff']:.1e} advantage {c['advantage_max_abs_diff']:.1e}")
    for c in checks.get("reinforce_objectives", []):
        print(f"  objective {c['variant']} iteration {c['iteration']}: loss abs diff {c['loss_abs_diff']:.1e}, "
              f"advantage {c['advantage_max_abs_diff']:.1e} (formula {c['advantage_formula_max_abs_diff']:.1e}), "
              f"ratio {c['ratio_mean_abs_diff']:.1e}, clip fraction {c['clip_fraction_abs_diff']:.1e}: "
              f"{'ok' if c['ok'] else 'FAILED'}")
    for i, (_, p) in enumerate(runs):
        run = f"run {i + 1}: " if len(runs) > 1 else ""
        ch = p.get("checks", {})
        for st in ("generation_batch1", "generation_batch16"):
            if st in ch and not ch[st]["logprob_max_abs_diff"] < LOGPROB_ATOL:
                failures.append(f"{run}{st}: log-probabilities differ by {ch[st]['logprob_max_abs_diff']}")
        for st in ("prefill_batch1", "prefill_batch16"):
            if st in ch and not ch[st]["logit_max_abs_diff"] <= PREFILL_LOGIT_RTOL * max(ch[st]["logit_max_abs"], 1.0):
                failures.append(f"{run}{st}: prefill logits differ by {ch[st]['logit_max_abs_diff']}")
        for c in ch.get("reinforce_iteration", []):
            if c["loss_rel_diff"] > RL_LOSS_RTOL and abs(c["alignflow_loss"] - c["pytorch_loss"]) > 1e-7:
                failures.append(f"{run}reinforce iteration {c['iteration']}: loss {c['alignflow_loss']} vs {c['pytorch_loss']}")
        # The reference judged each objective variant with its own
        # tolerances (reference.py's OBJ_*, which say why each is what it is).
        for c in ch.get("reinforce_objectives", []):
            if not c["ok"]:
                failures.append(f"{run}objective {c['variant']} iteration {c['iteration']}: {c.get('failed', 'outside the tolerances')}")
    if "reinforce_iteration" in out and checks.get("reinforce_iteration"):
        out["reinforce_iteration"]["replay_check"] = checks["reinforce_iteration"]
        if checks.get("reinforce_objectives"):
            out["reinforce_iteration"]["objectives_check"] = checks["reinforce_objectives"]

    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"\nwrote {args.json}")
    if failures:
        print("\nCORRECTNESS CHECK FAILED (a bug in the reference or in alignflow):", file=sys.stderr)
        for x in failures:
            print("  " + x, file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
