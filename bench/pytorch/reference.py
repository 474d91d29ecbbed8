#!/usr/bin/env python3
"""PyTorch reference for alignflow's benchmark stages.

Reads the fixtures that `go run ./bench/harness -out DIR` wrote (spec.json,
initial weights, token batches, prompts, checks/), runs the same stages with
the same model, optimizer and data, verifies against alignflow's recorded
outputs, and writes DIR/pytorch.json in alignflow.json's schema.

    python3 bench/pytorch/reference.py --dir DIR [--threads 2 --blas-threads 1] [--device cuda]

Threads: torch intra-op threads x OpenBLAS threads should equal the cores
(2 here). OPENBLAS_NUM_THREADS must be set before torch loads, so this script
sets it from --blas-threads before importing torch. They only matter on the
CPU device.

--device cuda puts every weight, optimizer state, token batch and sampling
generator on the GPU (fp32 with TF32 off, so the correctness checks stay
comparable), synchronises the GPU before each clock reading, and adds each
stage's peak CUDA memory allocated (peak_cuda_mb) to the host's peak RSS.
Exits 2 when CUDA is not available.
"""

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="fixtures directory written by the Go harness")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--blas-threads", type=int, default=2, help="OpenBLAS threads (default 2)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the reference runs (default cpu; --threads and --blas-threads only matter on cpu)")
    ap.add_argument("--stages", default="", help="comma-separated stages (default: those in spec.json)")
    ap.add_argument("--out", default="", help="output file (default DIR/pytorch.json)")
    return ap.parse_args()


ARGS = parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

DEVICE = torch.device(ARGS.device)
CUDA = DEVICE.type == "cuda"
if CUDA and not torch.cuda.is_available():
    print(f"reference: --device cuda, but torch {torch.__version__} sees no usable CUDA device "
          f"(torch.cuda.is_available() is False; torch built with CUDA {torch.version.cuda})", file=sys.stderr)
    sys.exit(2)


def sync():
    """Waits for the GPU's queued work, so that a clock reading after it
    covers that work (CUDA kernels run asynchronously). No-op on the CPU."""
    if CUDA:
        torch.cuda.synchronize()


# ---------------------------------------------------------------- memory

def reset_peak_cuda():
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak_cuda_mb():
    return torch.cuda.max_memory_allocated() / (1024 * 1024)


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ---------------------------------------------------------------- fixtures

class Fixtures:
    def __init__(self, d):
        self.dir = d
        with open(os.path.join(d, "spec.json")) as f:
            self.spec = json.load(f)
        s = self.spec
        self.cfg = M.Config(s["model"])
        self.files = s["files"]
        self.scale = s.get("kind") == "scale"
        if self.scale:
            self.eos, self.pad = None, s["pad"]
        else:
            tok = s["tokens"]
            self.eos, self.pad = tok["eos"], tok["pad"]

    def path(self, key):
        return os.path.join(self.dir, self.files[key])

    def json(self, key):
        with open(self.path(key)) as f:
            return json.load(f)

    def check(self, stage):
        p = os.path.join(self.dir, self.files["checks"], stage + ".json")
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    def weights(self, key, requires_grad=False):
        return M.load_params(self.path(key), requires_grad, DEVICE)[0]


def counts_for(spec, stage):
    c = spec["counts"]
    if stage in ("policy_train_step", "policy_train_step_lora", "reward_train_step"):
        return c["train_warmup"], c["train_steps"]
    if stage == "reinforce_iteration":
        return c["reinforce_warmup"], c["reinforce_steps"]
    return c["generation_warmup"], c["generation_steps"]


def machine_busy_s():
    """CPU time all processes used so far (/proc/stat, USER_HZ 100); -1 if unknown."""
    try:
        with open("/proc/stat") as f:
            v = f.readline().split()
        return sum(float(v[i]) for i in (1, 2, 3, 6, 7)) / 100
    except (OSError, ValueError, IndexError):
        return -1.0


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def run_stage(unit, prepare, step, warmup, steps, breakdown=None):
    """Same procedure and fields as benchkit.Run."""
    sync()
    t0 = time.perf_counter()
    prepare()
    sync()
    prepare_s = time.perf_counter() - t0
    reset_peak_rss()
    reset_peak_cuda()
    losses, secs, works, extra = [], [], [], {}
    busy0, own0, wall0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    for i in range(warmup + steps):
        sync()
        t = time.perf_counter()
        loss, work, ex, *own = step(i)
        sync()
        sec = own[0] if own else time.perf_counter() - t  # a step that times its own part
        if loss is not None:
            losses.append(loss)
        if i < warmup:
            continue
        secs.append(sec)
        works.append(work)
        for k, v in (ex or {}).items():
            extra[k] = extra.get(k, 0.0) + v / steps
    busy1 = machine_busy_s()
    other = 0.0
    if busy0 >= 0 and busy1 >= 0:
        other = max(0.0, (busy1 - busy0) - (own_cpu_s() - own0)) / (time.perf_counter() - wall0)
    r = {"unit": unit, "warmup": warmup, "steps": steps, "prepare_s": prepare_s, "seconds": secs,
         "seconds_median": statistics.median(secs), "throughput": sum(works) / sum(secs),
         "work_per_step_median": statistics.median(works), "peak_rss_mb": peak_rss_mb(), "extra": extra,
         "other_cpu_cores": other}
    if CUDA:
        r["peak_cuda_mb"] = peak_cuda_mb()
    if losses:
        r.update(losses=losses, initial_loss=losses[0], final_loss=losses[-1])
    if breakdown is not None:
        r["breakdown"] = breakdown()
    return r


# ---------------------------------------------------------------- stages

def policy_train(fx):
    s = fx.spec
    cfg = fx.cfg
    p = fx.weights("policy_init", True)
    tr = M.Trainer(p, s["adamw"], s["sft"]["learning_rate"])
    batches = [(torch.tensor(b["inputs"], dtype=torch.int64, device=DEVICE),
                torch.tensor(b["targets"], dtype=torch.int64, device=DEVICE),
                torch.tensor(b["mask"], dtype=torch.float32, device=DEVICE)) for b in fx.json("sft_batches")]

    def step(i):
        inp, tg, mk = batches[i % len(batches)]
        loss = M.sft_loss(p, cfg, inp, tg, mk)
        gn = tr.step(loss)
        return float(loss), inp.numel(), {"grad_norm": gn, "width": inp.shape[1]}

    return "tokens/s", lambda: None, step


def reward_train(fx):
    s = fx.spec
    cfg = fx.cfg
    p = fx.weights("reward_init", True)
    tr = M.Trainer(p, s["adamw"], s["reward"]["learning_rate"])
    batches = []
    for b in fx.json("reward_batches"):
        batches.append(tuple(torch.tensor(b[key], dtype=dt, device=DEVICE) for key, dt in (
            ("chosen", torch.int64), ("chosen_last", torch.int64), ("rejected", torch.int64),
            ("rejected_last", torch.int64), ("margin", torch.float32), ("weight", torch.float32),
            ("valid", torch.float32))))

    def step(i):
        b = batches[i % len(batches)]
        loss, acc = M.bt_loss(p, cfg, *b)
        gn = tr.step(loss)
        return float(loss), float(b[6].sum()), {"grad_norm": gn, "accuracy": float(acc)}

    return "pairs/s", lambda: None, step


def generation(fx, batch, checks):
    s = fx.spec
    cfg = fx.cfg
    p = fx.weights("policy_init")
    prompts = fx.json("gen_prompts")[str(batch)]
    smp = s["sample"]
    gen = torch.Generator(device=DEVICE).manual_seed(s["seed"] * 1000 + batch)
    stage = f"generation_batch{batch}"

    def prepare():
        c = fx.check(stage)
        if c is None:
            return
        samples, _ = M.generate_chunk(p, cfg, c["prompts"], batch, smp["temperature"], smp["top_p"], smp["max_tokens"],
                                      None, fx.eos, fx.pad, forced=c["tokens"])
        diff, n = 0.0, 0
        for sm, want, toks in zip(samples, c["logprobs"], c["tokens"]):
            assert sm.tokens == toks, "replayed tokens differ"
            for a, b in zip(sm.logprobs, want):
                diff = max(diff, abs(a - b))
                n += 1
        checks[stage] = {"replayed_tokens": n, "logprob_max_abs_diff": diff, "ok": diff < 1e-4}

    def step(i):
        samples, steps = M.generate(p, cfg, prompts, batch, smp["temperature"], smp["top_p"], smp["max_tokens"], gen,
                                    fx.eos, fx.pad)
        tokens = sum(len(x.tokens) for x in samples)
        ended = sum(1 for x in samples if x.ended)
        return None, tokens, {"decode_steps": steps, "ended_fraction": ended / len(samples)}

    return "tokens/s", prepare, step


class Reinforce:
    """reinforce.Iteration.Run."""

    def __init__(self, fx, policy_params, reference, rm):
        s = fx.spec
        self.fx, self.cfg = fx, fx.cfg
        self.r = s["reinforce"]
        self.smp = s["sample"]
        self.pol, self.ref, self.rm = policy_params, reference, rm
        self.trainer = M.Trainer(policy_params, s["adamw"], self.r["learning_rate"])
        self.phases = {}  # seconds by part, summed over iterations

    def _tick(self, part, t0):
        sync()
        t = time.perf_counter()
        self.phases[part] = self.phases.get(part, 0.0) + t - t0
        return t

    def logprobs(self, params, inputs, targets):
        with torch.no_grad():
            return M.token_logprobs(params, self.cfg, inputs, targets).tolist()

    def run(self, prompts, gen=None, replay=None):
        """One iteration. replay: a recorded iteration whose responses are
        used instead of sampling; returns the rollouts and stats."""
        r, cfg, fx = self.r, self.cfg, self.fx
        k, bs = r["samples_per_prompt"], r["batch_size"]
        ctx = [pr for pr in prompts for _ in range(k)]
        t = time.perf_counter()
        if replay is None:
            samples, _ = M.generate(self.pol, cfg, ctx, bs, self.smp["temperature"], self.smp["top_p"],
                                    self.smp["max_tokens"], gen, fx.eos, fx.pad)
            responses = [sm.tokens for sm in samples]
            ended = [sm.ended for sm in samples]
        else:
            responses = [ro["response"] for ro in replay["rollouts"]]
            ended = [ro["ended"] for ro in replay["rollouts"]]
        t = self._tick("generate", t)
        seqs = [M.sequence(ctx[i], responses[i], cfg.max_len) for i in range(len(ctx))]
        rewards = M.rewards(self.rm, cfg, seqs, bs, fx.pad)
        t = self._tick("score", t)
        kls, batches = [], []
        for start in range(0, len(ctx), bs):
            end = min(start + bs, len(ctx))
            inp, tg, mk = M.make_batch(cfg, bs, ctx[start:end], responses[start:end], fx.pad, DEVICE)
            lp = self.logprobs(self.pol, inp, tg)
            lpr = self.logprobs(self.ref, inp, tg)
            ml = mk.tolist()
            for i in range(start, end):
                kls.append(M.sequence_kl(lp[i - start], lpr[i - start], ml[i - start], r["kl_estimator"]))
            batches.append((inp, tg, mk, end - start))
        t = self._tick("logprobs", t)
        shaped = [rw - r["kl_beta"] * kl for rw, kl in zip(rewards, kls)]
        base = M.leave_one_out_baseline(shaped, ended, k)
        adv = [a - b for a, b in zip(shaped, base)]
        loss_mean, gn_mean = 0.0, 0.0
        for bi, (inp, tg, mk, rows) in enumerate(batches):
            a = torch.zeros(bs, dtype=torch.float32, device=DEVICE)
            a[:rows] = torch.tensor(adv[bi * bs:bi * bs + rows], dtype=torch.float32, device=DEVICE)
            loss = M.policy_loss(self.pol, cfg, inp, tg, mk, a)
            gn = self.trainer.step(loss)
            loss_mean += float(loss) / len(batches)
            gn_mean += gn / len(batches)
        self._tick("update", t)
        n = len(ctx)
        stats = {"loss": loss_mean, "grad_norm": gn_mean, "reward_mean": sum(rewards) / n, "kl_mean": sum(kls) / n,
                 "ended_fraction": sum(ended) / n}
        rollouts = [{"reward": rewards[i], "kl": kls[i], "shaped": shaped[i], "baseline": base[i], "advantage": adv[i]}
                    for i in range(n)]
        return rollouts, stats


def reinforce(fx, checks):
    s = fx.spec
    ref = fx.weights("rl_policy")
    rm = fx.weights("reward_init")
    prompts = fx.json("rl_prompts")
    ncheck = s["rl_check_iterations"]
    it = Reinforce(fx, fx.weights("rl_policy", True), ref, rm)
    gen = torch.Generator(device=DEVICE).manual_seed(s["seed"] * 1000 + 7)

    def prepare():
        variants = fx.check("reinforce_objectives")
        if variants is not None:
            checks["reinforce_objectives"] = [c for v in variants for c in replay_objective(fx, v, ref, rm)]
            for c in checks["reinforce_objectives"]:
                print(f"pytorch:   objectives {c['variant']:<28s} it {c['iteration']}: loss {c['alignflow_loss']:+.6e} "
                      f"vs {c['pytorch_loss']:+.6e} (abs {c['loss_abs_diff']:.1e}, steps {c['step_loss_max_abs_diff']:.1e}), "
                      f"advantage {c['advantage_max_abs_diff']:.1e} (formula {c['advantage_formula_max_abs_diff']:.1e}), "
                      f"ratio {c['ratio_mean_abs_diff']:.1e}, clip {c['clip_fraction_abs_diff']:.1e}  "
                      f"{'ok' if c['ok'] else 'FAILED'}", flush=True)
        recorded = fx.check("reinforce_iteration")
        if recorded is None:
            return
        chk = Reinforce(fx, fx.weights("rl_policy", True), ref, rm)
        out = []
        for i, rec in enumerate(recorded):
            rollouts, stats = chk.run(rec["prompts"], replay=rec)
            worst = {}
            for key in ("reward", "kl", "shaped", "baseline", "advantage"):
                worst[key + "_max_abs_diff"] = max(abs(a[key] - b[key]) for a, b in zip(rollouts, rec["rollouts"]))
            rel = abs(stats["loss"] - rec["loss"]) / max(abs(rec["loss"]), 1e-12)
            out.append({"iteration": i, "alignflow_loss": rec["loss"], "pytorch_loss": stats["loss"], "loss_rel_diff": rel,
                        "alignflow_kl_mean": rec["kl_mean"], "pytorch_kl_mean": stats["kl_mean"],
                        "alignflow_grad_norm": rec["grad_norm"], "pytorch_grad_norm": stats["grad_norm"], **worst})
        checks["reinforce_iteration"] = out

    warmup, _ = counts_for(s, "reinforce_iteration")

    def step(i):
        if i == warmup:
            it.phases.clear()  # the breakdown covers the timed iterations
        batch = prompts[(ncheck + i) % len(prompts)]
        _, st = it.run(batch, gen=gen)
        return st["loss"], len(batch), {k: v for k, v in st.items() if k != "loss"}

    def breakdown():
        _, steps = counts_for(s, "reinforce_iteration")
        return {k: v / steps for k, v in it.phases.items()}

    return "prompts/s", prepare, step, breakdown


# Tolerances of the objectives replay (checks/reinforce_objectives.json).
# The estimators on alignflow's own shaped rewards are float64 arithmetic
# on the same numbers: they agree to rounding. End to end, the rewards are
# each side's float32 reward model (they agree to about 1e-7), and an
# estimator that divides by a std multiplies their differences by its
# gain, 1 / (std + 1e-6), up to 100 here: the advantages must agree to
# 1e-6 times that gain. The losses (each step's and their mean) and the
# ratios are float32 sums over a batch: 1e-6 relative plus 1e-7, and the
# mean ratio 1e-6; gradient norms, sums over every parameter, 1e-5
# relative. A clip fraction may differ by a token or two whose ratio lies
# on the clip bound (none did in the measured runs).
OBJ_FORMULA_ATOL = 1e-9
OBJ_ADV_ATOL = 1e-6
OBJ_LOSS_RTOL, OBJ_LOSS_ATOL = 1e-6, 1e-7
OBJ_RATIO_ATOL = 1e-6
OBJ_GRAD_NORM_RTOL = 1e-5
OBJ_CLIP_FRACTION_ATOL = 2.5e-3


def advantage_gain(shaped, ended, k, estimator):
    """How much the estimator can multiply a difference in the shaped
    rewards: 1 for rloo and dr-grpo (differences of rewards and means),
    1 / (std + eps) of the group with the smallest std for grpo, and the
    batch whitening's 1 / (std + eps) for reinforce++."""
    if estimator in ("rloo", "dr-grpo"):
        return 1.0
    gain, centred = 1.0, []
    for g in range(0, len(shaped), k):
        ends = [shaped[i] for i in range(g, g + k) if ended[i]]
        if len(ends) <= 1:
            continue
        mean, std = M.mean_std(ends)
        gain = max(gain, 1.0 / (std + M.GROUP_EPS))
        centred += [shaped[i] - mean for i in range(g, g + k)]
    if estimator == "reinforce++":
        gain = 1.0 / (M.mean_std(centred)[1] + M.GROUP_EPS) if len(centred) >= 2 else 1.0
    return gain


def replay_objective(fx, variant, ref, rm):
    """Replays one recorded objective variant (benchkit.RLObjectiveCheck):
    each iteration on its recorded prompts and responses, from rl_policy
    with a fresh optimizer, with this file's own model, rewards, KL,
    advantage estimator (M.group_advantages) and loss (M.objective_loss):
    update_epochs passes over the iteration's batches, each of minibatches
    optimizer steps over consecutive batches whose gradients are summed
    (the losses of the step's batches, each over the step's denominator,
    added before one backward pass), the clipped loss reading the
    log-probabilities this policy gave the responses before the update (at
    sampling time). The update takes alignflow's recorded advantages
    (each rollout's, laid on the batch rows here): the estimator is
    checked on its own, on alignflow's shaped rewards and end to end, and
    the loss, ratios and clipping then see the same inputs on both sides
    instead of reward-model noise amplified by grpo's 1/std (which moves
    the losses by up to 2e-6). Returns one dict of differences per
    iteration."""
    cfg, s = fx.cfg, fx.spec
    obj = variant["settings"]
    k, bs = obj["samples_per_prompt"], obj["batch_size"]
    pol = fx.weights("rl_policy", True)
    trainer = M.Trainer(pol, s["adamw"], obj["learning_rate"])
    clipped = obj["update_epochs"] > 1
    out = []
    for it, rec in enumerate(variant["iterations"]):
        ros = rec["rollouts"]
        ctx = [pr for pr in rec["prompts"] for _ in range(k)]
        responses = [ro["response"] for ro in ros]
        ended = [ro["ended"] for ro in ros]
        n = len(ctx)
        rewards = M.rewards(rm, cfg, [M.sequence(ctx[i], responses[i], cfg.max_len) for i in range(n)], bs, fx.pad)
        batches, kls, logprobs = [], [], []
        for start in range(0, n, bs):
            end = min(start + bs, n)
            inp, tg, mk = M.make_batch(cfg, bs, ctx[start:end], responses[start:end], fx.pad, DEVICE)
            with torch.no_grad():
                old = M.token_logprobs(pol, cfg, inp, tg)
                lref = M.token_logprobs(ref, cfg, inp, tg)
            ol, rl, ml = old.tolist(), lref.tolist(), mk.tolist()
            for r in range(end - start):
                kls.append(M.sequence_kl(ol[r], rl[r], ml[r], obj["kl_estimator"]))
                logprobs.append(sum(x for x, m in zip(ol[r], ml[r]) if m != 0))
            batches.append((inp, tg, mk, end - start, old, lref))
        shaped = M.shape_rewards(rewards, kls, obj)
        base, adv = M.group_advantages(shaped, ended, k, obj["advantage"])
        # The estimator alone, on alignflow's own rewards and KL.
        rec_shaped = M.shape_rewards([ro["reward"] for ro in ros], [ro["kl"] for ro in ros], obj)
        rec_base, rec_adv = M.group_advantages([ro["shaped"] for ro in ros], ended, k, obj["advantage"])
        rec_adv_used = [ro["advantage"] for ro in ros]
        gain = advantage_gain([ro["shaped"] for ro in ros], ended, k, obj["advantage"])

        nb = len(batches)
        mb = obj["minibatches"]
        if mb <= 0 or mb > nb:
            mb = nb
        step_losses, grad_norms, ratio_means, clip_fracs = [], [], [], []
        for _ in range(max(obj["update_epochs"], 1)):
            for m in range(mb):
                part = batches[m * nb // mb:(m + 1) * nb // mb]
                first = m * nb // mb
                norm = M.aggregation_norm(obj, [b[2] for b in part], [b[3] for b in part])
                total, losses, rms, cfs = None, [], [], []
                for j, (inp, tg, mk, rows, old, lref) in enumerate(part):
                    a = torch.zeros(bs, dtype=torch.float32, device=DEVICE)
                    lo = (first + j) * bs
                    a[:rows] = torch.tensor(rec_adv_used[lo:lo + rows], dtype=torch.float32, device=DEVICE)
                    lp = M.token_logprobs(pol, cfg, inp, tg)
                    loss, rmean, cfrac = M.objective_loss(lp, mk, a, norm, obj, old, lref)
                    total = loss if total is None else total + loss
                    losses.append(float(loss))
                    rms.append(rmean)
                    cfs.append(cfrac)
                grad_norms.append(trainer.step(total))
                step_losses.append(sum(losses))
                if clipped:
                    ratio_means.append(sum(rms) / len(rms))
                    clip_fracs.append(sum(cfs) / len(cfs))
        steps = len(step_losses)
        loss = sum(step_losses) / steps
        grad_norm = sum(grad_norms) / steps
        ratio_mean = sum(ratio_means) / steps if clipped else 1.0
        clip_frac = sum(clip_fracs) / steps if clipped else 0.0

        def worst(mine, key):
            return max(abs(a - b[key]) for a, b in zip(mine, ros))

        c = {"variant": variant["variant"], "iteration": it, "steps": steps, "alignflow_steps": rec["steps"],
             "reward_max_abs_diff": worst(rewards, "reward"), "kl_max_abs_diff": worst(kls, "kl"),
             "logprob_max_abs_diff": worst(logprobs, "logprob"), "shaped_max_abs_diff": worst(shaped, "shaped"),
             "baseline_max_abs_diff": worst(base, "baseline"), "advantage_max_abs_diff": worst(adv, "advantage"),
             "advantage_gain": gain,
             "shaped_formula_max_abs_diff": worst(rec_shaped, "shaped"),
             "baseline_formula_max_abs_diff": worst(rec_base, "baseline"),
             "advantage_formula_max_abs_diff": worst(rec_adv, "advantage"),
             "alignflow_loss": rec["loss"], "pytorch_loss": loss, "loss_abs_diff": abs(loss - rec["loss"]),
             "alignflow_step_losses": rec["step_losses"], "pytorch_step_losses": step_losses,
             "step_loss_max_abs_diff": max(abs(a - b) for a, b in zip(step_losses, rec["step_losses"])),
             "alignflow_grad_norm": rec["grad_norm"], "pytorch_grad_norm": grad_norm,
             "grad_norm_rel_diff": abs(grad_norm - rec["grad_norm"]) / max(rec["grad_norm"], 1e-12),
             "alignflow_ratio_mean": rec["ratio_mean"], "pytorch_ratio_mean": ratio_mean,
             "ratio_mean_abs_diff": abs(ratio_mean - rec["ratio_mean"]),
             "alignflow_clip_fraction": rec["clip_fraction"], "pytorch_clip_fraction": clip_frac,
             "clip_fraction_abs_diff": abs(clip_frac - rec["clip_fraction"])}

        def close(a, b):
            return abs(a - b) <= OBJ_LOSS_ATOL + OBJ_LOSS_RTOL * abs(b)

        c["ok"] = bool(steps == rec["steps"]
                       and max(c["shaped_formula_max_abs_diff"], c["baseline_formula_max_abs_diff"],
                               c["advantage_formula_max_abs_diff"]) <= OBJ_FORMULA_ATOL
                       and c["advantage_max_abs_diff"] <= OBJ_ADV_ATOL * gain
                       and close(loss, rec["loss"])
                       and all(close(a, b) for a, b in zip(step_losses, rec["step_losses"]))
                       and c["grad_norm_rel_diff"] <= OBJ_GRAD_NORM_RTOL
                       and c["ratio_mean_abs_diff"] <= OBJ_RATIO_ATOL
                       and c["clip_fraction_abs_diff"] <= OBJ_CLIP_FRACTION_ATOL)
        out.append(c)
    return out


# ---------------------------------------------------------------- scale stages

def scale_train(fx):
    """The scale benchmark's train step: policy SFT on train_batches."""
    p = fx.weights("policy_init", True)
    return scale_train_of(fx, p, p, fx.cfg)


def scale_train_lora(fx):
    """scale_train training only a LoRA adapter (lora_init) over the frozen
    model, as PEFT trains one: the model's weights need no gradients, and
    the optimizer holds the adapter's tensors only."""
    lora = fx.spec["lora"]
    adapter = fx.weights("lora_init", True)
    cfg = copy.copy(fx.cfg)
    cfg.lora_scale = lora["lora_alpha"] / lora["r"]
    return scale_train_of(fx, {**fx.weights("policy_init", False), **adapter}, adapter, cfg)


def scale_train_of(fx, p, trained, cfg):
    """SFT steps on train_batches with parameters p, training trained."""
    s = fx.spec
    tr = M.Trainer(trained, s["adamw"], s["learning_rate"])
    batches = [(torch.tensor(b["inputs"], dtype=torch.int64, device=DEVICE),
                torch.tensor(b["targets"], dtype=torch.int64, device=DEVICE),
                torch.tensor(b["mask"], dtype=torch.float32, device=DEVICE)) for b in fx.json("train_batches")]

    def step(i):
        inp, tg, mk = batches[i]
        loss = M.sft_loss(p, cfg, inp, tg, mk)
        gn = tr.step(loss)
        return float(loss), inp.numel(), {"grad_norm": gn}

    return "tokens/s", lambda: None, step


def greedy(p, cfg, logits, kc, vc, pads, steps):
    """benchkit.greedy: steps decoding steps, each feeding every row's most
    likely token (argmax: the first of equal ones); returns the steps+1
    tokens per row."""
    out = []
    for i in range(steps + 1):
        tok = logits.argmax(-1)
        out.append(tok.tolist())
        if i == steps:
            break
        logits, kc, vc = M.decode_step(p, cfg, tok, pads, kc, vc)
    return [list(r) for r in zip(*out)]


def scale_prefill(fx, batch, checks, decode):
    """prefill_batchN (one prefill of the batch's prompts) or, with decode,
    decode_batchN (decode_steps greedy steps after an untimed prefill)."""
    s, cfg = fx.spec, fx.cfg
    p = fx.weights("policy_init")
    prompts = torch.tensor(fx.json("prompts")[str(batch)], dtype=torch.int64, device=DEVICE)
    pads = torch.zeros(batch, dtype=torch.int64, device=DEVICE)
    stage = f"{'decode' if decode else 'prefill'}_batch{batch}"

    def prepare():
        c = fx.check(f"prefill_batch{batch}")
        if decode or c is None:
            return
        with torch.no_grad():
            logits, kc, vc = M.prefill(p, cfg, prompts, pads)
            want = torch.tensor(c["logits"], dtype=torch.float32, device=DEVICE)
            diff = float((logits[0] - want).abs().max())
            scale = float(want.abs().max())
            tokens = greedy(p, cfg, logits, kc, vc, pads, s["decode_steps"])
        same = [sum(1 for _ in itertools.takewhile(lambda ab: ab[0] == ab[1], zip(a, b)))
                for a, b in zip(tokens, c["greedy"])]
        checks[stage] = {"logit_max_abs_diff": diff, "logit_max_abs": scale, "greedy_tokens": len(c["greedy"][0]),
                         "greedy_agreeing_min": min(same), "ok": diff <= 1e-4 * max(scale, 1.0)}

    def step(i):
        with torch.no_grad():
            logits, kc, vc = M.prefill(p, cfg, prompts, pads)
            if not decode:
                return None, prompts.numel(), {}
            sync()
            t = time.perf_counter()
            greedy(p, cfg, logits, kc, vc, pads, s["decode_steps"])
            sync()
            return None, batch * s["decode_steps"], {}, time.perf_counter() - t

    return "tokens/s", prepare, step


def main():
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    if CUDA:
        # Full fp32 products (TF32 would change results at about 1e-3 and
        # break the comparison with alignflow's recorded outputs).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    fx = Fixtures(ARGS.dir)
    spec = fx.spec
    stages = [x for x in ARGS.stages.split(",") if x] or spec["stages"]
    checks = {}
    if fx.scale:
        builders = {"policy_train_step": lambda: scale_train(fx), "policy_train_step_lora": lambda: scale_train_lora(fx)}
        for b in spec["generation_batches"]:
            builders[f"prefill_batch{b}"] = (lambda b=b: scale_prefill(fx, b, checks, False))
            builders[f"decode_batch{b}"] = (lambda b=b: scale_prefill(fx, b, checks, True))
    else:
        builders = {
            "policy_train_step": lambda: policy_train(fx),
            "reward_train_step": lambda: reward_train(fx),
            "reinforce_iteration": lambda: reinforce(fx, checks),
        }
        for b in spec["generation_batches"]:
            builders[f"generation_batch{b}"] = (lambda b=b: generation(fx, b, checks))
    report = {
        "implementation": "pytorch", "torch_version": torch.__version__, "python_version": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "blas_threads": ARGS.blas_threads, "device": DEVICE.type,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {}, "checks": checks,
    }
    if CUDA:
        report.update(device_name=torch.cuda.get_device_name(DEVICE), cuda_version=torch.version.cuda)
    for name in stages:
        if name not in builders:
            sys.exit(f"reference: unknown stage {name!r}")
        unit, prepare, step, *breakdown = builders[name]()
        warmup, steps = counts_for(spec, name)
        r = run_stage(unit, prepare, step, warmup, steps, *breakdown)
        report["stages"][name] = r
        loss = f"  loss {r['initial_loss']:.6f} -> {r['final_loss']:.6f}" if "initial_loss" in r else ""
        cuda = f" (CUDA {r['peak_cuda_mb']:.1f} MiB)" if "peak_cuda_mb" in r else ""
        print(f"pytorch:   {name:<20s} {r['seconds_median']:8.4f} s/step  {r['throughput']:10.1f} {unit:<9s}  "
              f"peak {r['peak_rss_mb']:.0f} MiB{cuda}  other CPU {r['other_cpu_cores']:.2f}{loss}", flush=True)
    out = ARGS.out or os.path.join(ARGS.dir, "pytorch.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
