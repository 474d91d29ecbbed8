package matmul

import (
	"math/rand/v2"
	"testing"
)

// The 8×8 transpose used for packing (assembly on amd64) against the scalar loop.
func TestTransposeBlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, ld := range [][2]int{{8, 8}, {48, 11}, {9, 576}} {
		ldd, lds := ld[0], ld[1]
		src := randomFloats(rng, 7*lds+8)
		got, want := make([]float32, 7*ldd+8), make([]float32, 7*ldd+8)
		transposeBlock(got, ldd, src, lds)
		transposeScalar(want, ldd, src, lds, 8, 8)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("ldd=%d lds=%d: dst[%d] = %g, want %g", ldd, lds, i, got[i], want[i])
			}
		}
	}
}
