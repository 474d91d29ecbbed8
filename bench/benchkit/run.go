package benchkit

import (
	"bufio"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ResetPeakRSS resets the process's peak resident set size (VmHWM), so a
// later PeakRSSMB reports the peak since now. Linux only; elsewhere it does
// nothing and PeakRSSMB reports the process's peak.
func ResetPeakRSS() {
	// Return the freed heap to the system first: otherwise a stage's peak
	// would include what an earlier stage freed but the runtime kept.
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// PeakRSSMB is VmHWM from /proc/self/status in MiB (0 where unavailable).
func PeakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				kb, err := strconv.ParseFloat(fields[0], 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	return 0
}

// Result is a stage's measurement, in the schema alignflow.json and
// pytorch.json share.
type Result struct {
	Unit       string  `json:"unit"`
	Warmup     int     `json:"warmup"`
	Steps      int     `json:"steps"`
	PrepareSec float64 `json:"prepare_s"`
	// Seconds are the timed steps' durations; SecondsMedian is the figure compared.
	Seconds       []float64 `json:"seconds"`
	SecondsMedian float64   `json:"seconds_median"`
	// Throughput is the timed steps' work over their total time.
	Throughput float64 `json:"throughput"`
	WorkMedian float64 `json:"work_per_step_median"`
	// Losses are every step's loss, warmup included (training stages).
	Losses      []float64 `json:"losses,omitempty"`
	InitialLoss *float64  `json:"initial_loss,omitempty"`
	FinalLoss   *float64  `json:"final_loss,omitempty"`
	// PeakRSSMB is the process's peak resident memory during the stage's
	// steps (warmup and timed; the peak was reset after Prepare).
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// AllocMBPerStep is Go heap allocation per step (alignflow only).
	AllocMBPerStep float64 `json:"alloc_mb_per_step,omitempty"`
	// Extra are per-stage means over the timed steps.
	Extra map[string]float64 `json:"extra,omitempty"`
	// OtherCPUCores is the CPU other processes used during the steps, in
	// cores (machine busy time from /proc/stat minus this process's): above
	// a few tenths on a 2-core machine, the timings are skewed.
	OtherCPUCores float64 `json:"other_cpu_cores"`
	// Breakdown is seconds per part of one step, where the stage measures it.
	Breakdown map[string]float64 `json:"breakdown,omitempty"`
}

// machineBusySec is the CPU time all processes used so far, from /proc/stat
// (USER_HZ is 100 on Linux); -1 where unavailable.
func machineBusySec() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return -1
	}
	busy := 0.0
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return -1
		}
		busy += v
	}
	return busy / 100
}

// ownCPUSec is this process's user and system CPU time.
func ownCPUSec() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// Run prepares the stage, runs warmup and timed steps and measures them.
func Run(st *Stage, warmup, steps int) (*Result, error) {
	r := &Result{Unit: st.Unit, Warmup: warmup, Steps: steps, Extra: map[string]float64{}}
	t0 := time.Now()
	if err := st.Prepare(); err != nil {
		return nil, err
	}
	r.PrepareSec = time.Since(t0).Seconds()
	ResetPeakRSS()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var works []float64
	totalWork, totalSec := 0.0, 0.0
	busy0, own0, wall0 := machineBusySec(), ownCPUSec(), time.Now()
	for i := 0; i < warmup+steps; i++ {
		t := time.Now()
		out, err := st.Step(i)
		if err != nil {
			return nil, err
		}
		sec := time.Since(t).Seconds()
		if out.Seconds > 0 {
			sec = out.Seconds
		}
		if !math.IsNaN(out.Loss) {
			r.Losses = append(r.Losses, out.Loss)
		}
		if i < warmup {
			continue
		}
		r.Seconds = append(r.Seconds, sec)
		works = append(works, out.Work)
		totalWork += out.Work
		totalSec += sec
		for k, v := range out.Extra {
			r.Extra[k] += v / float64(steps)
		}
	}
	if busy1 := machineBusySec(); busy0 >= 0 && busy1 >= 0 {
		r.OtherCPUCores = max(0, (busy1-busy0)-(ownCPUSec()-own0)) / time.Since(wall0).Seconds()
	}
	runtime.ReadMemStats(&ms1)
	r.PeakRSSMB = PeakRSSMB()
	r.AllocMBPerStep = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(warmup+steps) / (1 << 20)
	r.SecondsMedian = Median(r.Seconds)
	r.WorkMedian = Median(works)
	if totalSec > 0 {
		r.Throughput = totalWork / totalSec
	}
	if len(r.Losses) > 0 {
		first, last := r.Losses[0], r.Losses[len(r.Losses)-1]
		r.InitialLoss, r.FinalLoss = &first, &last
	}
	if st.Breakdown != nil {
		bd, err := st.Breakdown()
		if err != nil {
			return nil, err
		}
		r.Breakdown = bd
	}
	if st.Done != nil {
		if err := st.Done(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
