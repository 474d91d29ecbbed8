package backend

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend/fastgo"
)

func randTensor(r *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(r.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(data, dims...)
}

// TestFastDotGradientMatchesStock checks the replacement VJP against GoMLX's own
// gradient on the einsum patterns the models use and on awkward ones (batch axes
// not first, several contracting axes in a different order on each side).
func TestFastDotGradientMatchesStock(t *testing.T) {
	b, err := New(Go)
	require.NoError(t, err)
	cases := []struct {
		name    string
		lhsDims []int
		lc, lb  []int
		rhsDims []int
		rc, rb  []int
	}{
		{"linear", []int{3, 5, 4}, []int{2}, nil, []int{4, 6}, []int{0}, nil},
		{"scores bhtd,bhsd->bhts", []int{2, 3, 4, 5}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{3}, []int{0, 1}},
		{"context bhts,bhsd->bhtd", []int{2, 3, 4, 6}, []int{3}, []int{0, 1}, []int{2, 3, 6, 5}, []int{2}, []int{0, 1}},
		{"weight on the left", []int{6, 4}, []int{0}, nil, []int{3, 6, 2}, []int{1}, nil},
		{"batch last, two contracting swapped", []int{4, 5, 3, 2}, []int{0, 1}, []int{3}, []int{2, 5, 4, 7}, []int{2, 1}, []int{0}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lhs := randTensor(r, tc.lhsDims...)
			rhs := randTensor(r, tc.rhsDims...)
			probe := graph.MustExecOnceN(b, func(l, rr *graph.Node) []*graph.Node {
				return []*graph.Node{graph.DotGeneral(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)}
			}, lhs, rhs)[0]
			w := randTensor(r, probe.Shape().Dimensions...)
			grads := func(fast bool) []*tensors.Tensor {
				return graph.MustExecOnceN(b, func(l, rr, ww *graph.Node) []*graph.Node {
					var out *graph.Node
					if fast {
						out = Dot(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)
						_, recorded := dotSpecs.Load(out)
						require.True(t, recorded, "Dot must record its axes for the fast gradient")
					} else {
						out = graph.DotGeneral(l, tc.lc, tc.lb, rr, tc.rc, tc.rb)
					}
					loss := graph.ReduceAllSum(graph.Mul(out, ww))
					return graph.Gradient(loss, l, rr)
				}, lhs, rhs, w)
			}
			want, got := grads(false), grads(true)
			for i := range want {
				require.Equal(t, want[i].Shape(), got[i].Shape())
				wv := tensors.MustCopyFlatData[float32](want[i])
				gv := tensors.MustCopyFlatData[float32](got[i])
				require.InDeltaSlice(t, wv, gv, 1e-4)
			}
		})
	}
}

func TestCheckAvailableNamesWhatIsMissing(t *testing.T) {
	require.NoError(t, CheckAvailable(Go))
	require.NoError(t, CheckAvailable(GoStock))
	err := CheckAvailable("tpu")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown backend "tpu"`)
	if _, linked := extraBackends[XLA]; !linked {
		err = CheckAvailable("xla:cuda")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "-tags xla", "a user asking for XLA learns how to get it")
	}
}

// TestCheckNameIsTheSameInEveryBuild: the names a spec may give are
// accepted or refused by their spelling alone, so workflow validation does
// not depend on the build tags (this test runs the same with -tags xla).
// Runs recorded before plugin names were plain ones took a path too.
func TestCheckNameIsTheSameInEveryBuild(t *testing.T) {
	for _, name := range []string{"go", "go-stock", "xla", "xla:cuda", "xla:cuda13", "xla:rocm_6.2"} {
		assert.NoError(t, CheckName(name), name)
		assert.NoError(t, CheckRecordedName(name), name)
	}
	for name, want := range map[string]string{
		"tpu": `unknown backend "tpu"`, "": `unknown backend ""`, "XLA": `unknown backend "XLA"`,
		"xla:": "names no plugin", "go:fast": "takes no argument", "go-stock:x": "takes no argument",
	} {
		for _, check := range []func(string) error{CheckName, CheckRecordedName} {
			err := check(name)
			require.Error(t, err, name)
			assert.Contains(t, err.Error(), want, name)
		}
	}
	assert.NoError(t, CheckRecordedName("xla:/opt/pjrt/xla_cuda_plugin.so"), "as recorded runs were checked")
}

// TestGoIsFastgoAndGoStockIsSimplego: "go" runs alignflow's kernel backend,
// "go-stock" GoMLX's pure-Go backend as it comes.
func TestGoIsFastgoAndGoStockIsSimplego(t *testing.T) {
	fast, err := New(Go)
	require.NoError(t, err)
	assert.Equal(t, fastgo.BackendName, fast.String())
	stock, err := New(GoStock)
	require.NoError(t, err)
	assert.Equal(t, "go", stock.String())
	assert.NotSame(t, fast, stock)
	assert.Contains(t, Names(), GoStock)
}
