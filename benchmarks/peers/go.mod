module github.com/pagealloc/pagealloc/benchmarks/peers

go 1.26.8

require (
	github.com/pagealloc/pagealloc v0.0.0
	modernc.org/file v1.1.4
	modernc.org/lldb v1.0.8
)

require (
	github.com/edsrzf/mmap-go v1.2.0 // indirect
	github.com/remyoudompheng/bigfft v0.0.0-20230129092748-24d4a6f8daec // indirect
	golang.org/x/sys v0.49.0 // indirect
	modernc.org/fileutil v1.4.0 // indirect
	modernc.org/internal v1.1.12 // indirect
	modernc.org/mathutil v1.7.1 // indirect
	modernc.org/sortutil v1.1.1 // indirect
	modernc.org/zappy v1.0.9 // indirect
)

replace github.com/pagealloc/pagealloc => ../..
