//go:build !race

package simstore

const raceEnabled = false
