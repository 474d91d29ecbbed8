package matmul

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Every path's tile kernel, for every tile size and both starts, against the
// portable one: the same bits in the columns asked for, c untouched past the
// kernel's vector width and below the tile.
func TestTileSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	const ldb, ldc = nr + 5, nr + 3
	for _, p := range Available() {
		for rows := 1; rows <= mr; rows++ {
			for cols := 1; cols <= nr; cols++ {
				for _, steps := range []int{1, 6} {
					for _, accumulate := range []bool{false, true} {
						a, b := randomFloats(rng, steps*mr), randomFloats(rng, steps*ldb)
						c0 := randomFloats(rng, (mr+1)*ldc)
						want := append([]float32(nil), c0...)
						goTile(rows, cols, steps, a, b, ldb, want, ldc, accumulate)
						got := append([]float32(nil), c0...)
						paths[p].tile(rows, cols, steps, a, b, ldb, got, ldc, accumulate)
						what := fmt.Sprintf("%v: %d×%d tile, %d steps, accumulate %v", p, rows, cols, steps, accumulate)
						for i := range got {
							r, j := i/ldc, i%ldc
							if r < rows && j < cols && math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s: c[%d][%d] = %g, want %g", what, r, j, got[i], want[i])
							}
							if (r >= rows || j >= nr) && got[i] != c0[i] {
								t.Fatalf("%s: c[%d][%d] outside the tile was written", what, r, j)
							}
						}
					}
				}
			}
		}
	}
}
