package benchkit

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/alignflow/alignflow/model/backend"
)

// benchStage is a prepared stage shared by every run of one benchmark in a
// test binary: `go test -bench` calls a benchmark function several times with
// growing b.N, and fixtures, compilation and optimizer state carry over.
type benchStage struct {
	st   *Stage
	next int
	err  error
}

var (
	benchMu     sync.Mutex
	benchStages = map[string]*benchStage{}
)

func prepared(name string) (*benchStage, error) {
	benchMu.Lock()
	defer benchMu.Unlock()
	if bs, ok := benchStages[name]; ok {
		return bs, bs.err
	}
	bs := &benchStage{}
	benchStages[name] = bs
	bs.err = func() error {
		be, err := backend.New(backend.Go)
		if err != nil {
			return err
		}
		sizes := DefaultSizes()
		if name != ReinforceIteration {
			sizes.Reinforce.PolicySFTSteps = 0 // only REINFORCE needs the SFT-warmed policy
		}
		f, err := NewFixtures(be, sizes, QuickCounts, LoadData(sizes))
		if err != nil {
			return err
		}
		for _, st := range Stages(be, f) {
			if st.Name == name {
				bs.st = st
				return st.Prepare()
			}
		}
		return fmt.Errorf("benchkit: no stage %q", name)
	}()
	return bs, bs.err
}

// Bench runs the named stage (PolicyTrainStep, GenerationStageName(16)...)
// as a Go benchmark at the default run spec's sizes. Fixtures and compiled
// graphs are built once per test binary, outside the timer. It reports the
// stage's throughput (tokens/s, pairs/s or prompts/s), allocations, the
// mean loss of the timed steps (training stages) and peak-RSS-MiB, the
// process's peak resident memory during the timed steps.
func Bench(b *testing.B, name string) {
	bs, err := prepared(name)
	if err != nil {
		b.Fatal(err)
	}
	ResetPeakRSS()
	b.ReportAllocs()
	b.ResetTimer()
	work, loss, losses := 0.0, 0.0, 0
	for i := 0; i < b.N; i++ {
		out, err := bs.st.Step(bs.next)
		bs.next++
		if err != nil {
			b.Fatal(err)
		}
		work += out.Work
		if !math.IsNaN(out.Loss) {
			loss += out.Loss
			losses++
		}
	}
	b.StopTimer()
	b.ReportMetric(work/b.Elapsed().Seconds(), bs.st.Unit)
	if losses > 0 {
		b.ReportMetric(loss/float64(losses), "loss")
	}
	b.ReportMetric(PeakRSSMB(), "peak-RSS-MiB")
}
