"""Prints bench/matmul's and bench/pytorch/matmul.py's results side by side
(DIR/matmul.json, DIR/matmul_pytorch.json), for bench/compare.sh --matmul:
GFLOP/s of each, alignflow's over PyTorch's (the goal: at least 1), and
alignflow's as a fraction of the measured FMA peak (the goal: at least 50%).

    python3 bench/matmul_table.py --dir DIR [--json FILE]
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    with open(os.path.join(args.dir, "matmul.json")) as f:
        af = json.load(f)
    with open(os.path.join(args.dir, "matmul_pytorch.json")) as f:
        pt = json.load(f)
    peak = af["peak_gflops"]
    print()
    print(f"alignflow: model/matmul, path {af['path']}, {af['threads']} threads; measured FMA peak {peak:.0f} GFLOP/s "
          f"(the micro-kernel on L1-resident panels, every core)")
    print(f"pytorch:   torch {pt['torch']} matmul, {pt['threads']} torch thread(s) x {pt['blas_threads']} OpenBLAS thread(s)")
    print()
    print(f"{'shape (M x K x N)':<28} {'b':<3} {'alignflow':>10} {'pytorch':>9} {'ratio':>6} {'of peak':>8}")
    print("-" * 68)
    out = []
    for a, p in zip(af["results"], pt["results"]):
        ratio = a["gflops"] / p["gflops"]
        frac = a["gflops"] / peak
        layout = "T" if a["trans_b"] else "N"
        print(f"{a['name']:<28} {layout:<3} {a['gflops']:10.1f} {p['gflops']:9.1f} {ratio:6.2f} {100 * frac:7.0f}%")
        out.append({"name": a["name"], "trans_b": a["trans_b"], "alignflow_gflops": a["gflops"], "pytorch_gflops": p["gflops"],
                    "ratio": ratio, "fraction_of_peak": frac})
    print("\nratio = alignflow GFLOP/s / PyTorch GFLOP/s (higher is better; b T: b is [N,K] in memory, a layer's [out, in] weight)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_gflops": peak, "results": out}, f, indent=2)


if __name__ == "__main__":
    main()
