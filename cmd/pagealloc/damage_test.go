package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	damageSeed   = flag.Uint64("damage.seed", 0, "seed for TestVerbsOnRandomDamage (0: time)")
	damageRounds = flag.Int("damage.rounds", 40, "damaged devices in TestVerbsOnRandomDamage")
)

// TestVerbsOnRandomDamage runs every inspecting verb on copies of a device
// with one to four random words written into its allocator state, log
// table and rings, journal ring, first block's metadata and the first
// bytes of its free-list heads and other pages: the tool is what one
// reaches for on a damaged file. Each verb must exit 0 (nothing wrong
// found), or 1 with a message on stderr, never panic, and leave the file
// as it was; check must exit 1 whenever stats or dump could not open the
// file.
func TestVerbsOnRandomDamage(t *testing.T) {
	seed := *damageSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -run '^%s$' -damage.seed=%d)", seed, t.Name(), seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := fixtureDevice(t)
	in := inspect(t, path)
	clean, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	regions := [][2]int64{
		{in.AllocatorState.Offset, in.AllocatorState.Size},
		{in.LogRegions.Offset, in.LogRegions.Size},
		{in.Journal.Offset, in.Journal.Size},
		{in.HeapOffset, in.BlockMetadataBytes},
	}
	var heads []int64
	for _, l := range in.FreeLists {
		if l.Head != 0 {
			heads = append(heads, l.Head)
		}
	}
	if in.Pending.Head != 0 {
		heads = append(heads, in.Pending.Head)
	}
	for _, c := range in.SubpageClasses {
		if c.ListHead != 0 {
			heads = append(heads, c.ListHead)
		}
	}
	png := filepath.Join(t.TempDir(), "map.png")
	failed := 0 // devices check found damaged
	for round := range *damageRounds {
		b := slices.Clone(clean)
		var what []string
		for range 1 + rng.IntN(4) {
			var at int64
			switch k := rng.IntN(len(regions) + 2); {
			case k < len(regions):
				at = regions[k][0] + rng.Int64N(regions[k][1]/8)*8
			case k == len(regions) && len(heads) > 0:
				at = heads[rng.IntN(len(heads))] + 8*rng.Int64N(8)
			default:
				at = in.HeapOffset + rng.Int64N((in.Frontier-in.HeapOffset)/4096)*4096 + 8*rng.Int64N(4)
			}
			v := rng.Uint64()
			if rng.IntN(2) == 0 {
				v = uint64(in.HeapOffset + rng.Int64N(in.Frontier-in.HeapOffset)&^63)
			}
			binary.LittleEndian.PutUint64(b[at:], v)
			what = append(what, fmt.Sprintf("%d=%#x", at, v))
		}
		dev := filepath.Join(t.TempDir(), "damaged")
		if err := os.WriteFile(dev, b, 0o644); err != nil {
			t.Fatal(err)
		}
		ok := t.Run(fmt.Sprint(round), func(t *testing.T) {
			refused := false
			for _, args := range [][]string{
				{"stats", dev},
				{"dump", dev},
				{"dump", "-pages", "-json", dev},
				{"map", "-o", png, dev},
				{"check", dev},
			} {
				code, _, stderr := runUnchanged(t, args...)
				switch {
				case code == 1 && strings.TrimSpace(stderr) == "" && args[0] != "check":
					t.Errorf("%v: exit 1 with nothing on stderr", args)
				case code != 0 && code != 1:
					t.Errorf("%v: exit %d: %s", args, code, stderr)
				case code == 1 && args[0] != "check":
					refused = true
				case args[0] == "check" && code == 1:
					failed++
				case args[0] == "check" && refused:
					t.Errorf("check exits 0 on a file the other verbs refused")
				}
			}
		})
		if !ok {
			t.Fatalf("round %d: damage %v", round, what)
		}
	}
	t.Logf("%d rounds: check found %d devices damaged", *damageRounds, failed)
	if failed == 0 {
		t.Errorf("the damage never reached the device's structures")
	}
}
