// Package reporttest checks a written report as a person reading it
// would: every chart the page shows is there, and each is a picture with
// something drawn on it.
package reporttest

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
)

var refs = regexp.MustCompile(`(?:src|href)="([^"#:]+)"`)

// Check reads dir's report.html and returns the charts it shows (PNG file
// names). It fails when a file the page refers to is missing, or when a
// PNG does not decode or has fewer than minColored colored pixels: axes,
// labels and grid are black and gray, so the colored ones are the data.
func Check(dir string, minColored int) ([]string, error) {
	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		return nil, err
	}
	var charts []string
	for _, m := range refs.FindAllSubmatch(page, -1) {
		name := string(m[1])
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("report.html refers to %s: %w", name, err)
		}
		if filepath.Ext(name) != ".png" {
			continue
		}
		n, err := Colored(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if n < minColored {
			return nil, fmt.Errorf("%s has %d colored pixels, want at least %d: nothing drawn", name, n, minColored)
		}
		charts = append(charts, name)
	}
	return charts, nil
}

// Colored counts the pixels of a PNG whose channels differ by more than a
// quarter of their range: colors, not the grays of a blank chart.
func Colored(data []byte) (int, error) {
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return 0, fmt.Errorf("not a PNG: %w", err)
	}
	return colored(img), nil
}

func colored(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			hi, lo := max(r, g, bl), min(r, g, bl)
			if hi-lo > 0x4000 {
				n++
			}
		}
	}
	return n
}
