package matmul

import (
	"math/rand/v2"
	"testing"
)

// The transpose used for packing (by 8×8 blocks in assembly on amd64) against
// the scalar loop, on shapes with and without edges.
func TestTranspose(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, sh := range [][4]int{{8, 8, 8, 8}, {16, 24, 48, 24}, {48, 256, 48, 300}, {13, 21, 21, 27}, {5, 3, 8, 3}} {
		rows, cols, ldd, lds := sh[0], sh[1], sh[2], sh[3]
		src := randomFloats(rng, (rows-1)*lds+cols)
		got, want := make([]float32, (cols-1)*ldd+rows), make([]float32, (cols-1)*ldd+rows)
		transpose(got, ldd, src, lds, rows, cols)
		transposeScalar(want, ldd, src, lds, rows, cols)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%d×%d, ldd=%d lds=%d: dst[%d] = %g, want %g", rows, cols, ldd, lds, i, got[i], want[i])
			}
		}
	}
}
