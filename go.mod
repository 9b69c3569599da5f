module github.com/pagealloc/pagealloc

go 1.26.8

require (
	github.com/edsrzf/mmap-go v1.2.0
	golang.org/x/sys v0.49.0
)
