"""Times torch.matmul on the shapes bench/matmul timed (read from DIR/matmul.json)
and writes DIR/matmul_pytorch.json, for bench/compare.sh --matmul.

    python3 bench/pytorch/matmul.py --dir DIR [--threads 1] [--blas-threads 2] [--seconds 1]
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--blas-threads", type=int, default=2, help="OpenBLAS threads (default 2)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time to spend on each shape")
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)  # before torch loads OpenBLAS
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with open(os.path.join(args.dir, "matmul.json")) as f:
        shapes = json.load(f)["results"]
    results = []
    for s in shapes:
        m, k, n = s["M"], s["K"], s["N"]
        a = torch.randn(m, k)
        # b as the Go side holds it: [K,N], or [N,K] read transposed (a layer's [out, in] weight).
        b = torch.randn(n, k).t() if s["trans_b"] else torch.randn(k, n)
        c = torch.empty(m, n)
        torch.matmul(a, b, out=c)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds or count < 3:
            torch.matmul(a, b, out=c)
            count += 1
        per = (time.perf_counter() - start) / count
        results.append({"name": s["name"], "trans_b": s["trans_b"], "seconds": per, "gflops": 2 * m * k * n / per / 1e9})
        print(f"pytorch   matmul: {s['name']:26s} transB={str(s['trans_b']):5s} {results[-1]['gflops']:8.1f} GFLOP/s")
    rep = {"implementation": "pytorch", "torch": torch.__version__, "threads": args.threads,
           "blas_threads": args.blas_threads, "results": results}
    with open(os.path.join(args.dir, "matmul_pytorch.json"), "w") as f:
        json.dump(rep, f, indent=2)


if __name__ == "__main__":
    main()
