// Command clientv3_load loads an etcd v3 server (etcd or capstan store) through
// go.etcd.io/etcd/clientv3, the Go client Kubernetes' API server uses, and prints
// throughput, latency percentiles and the server's CPU per operation.
//
// It opens -conns clients (each one clientv3.Client, so one gRPC connection per
// endpoint, as each Kubernetes storage backend holds one), and runs -clients
// goroutines over them round robin, each issuing one request at a time (closed
// loop) until -total operations are done. Values are -val-size bytes on -keys
// keys chosen at random.
//
// Workloads:
//
//	put         Put(key, value)
//	get         Get(key, WithSerializable()); the keys are written first, unmeasured
//	txn-create  Txn If(CreateRevision(key) == 0) Then(OpPut(key, value)) Else(OpGet(key)),
//	            Kubernetes' create: once the keys exist most calls take the Else branch
//
// The server's CPU is utime+stime from /proc/PID/stat (threads included) of each
// -pid, read after a warm-up and after the last operation. With -json the result
// is one line with the fields `capstan bench store --json` prints, so
// bench/store_report.py reads both.
//
// Built by bench/store-vs-etcd.sh with Debian's packages and no module proxy:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o build/clientv3_load ./bench/clientv3_load
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

type options struct {
	endpoints []string
	conns     int
	clients   int
	total     int64
	warmup    int64
	workload  string
	valSize   int
	keys      int
	prefix    string
	pids      []int
	timeout   time.Duration
	json      bool
}

// result has the field names of capstan's StoreBenchResult::Json.
type result struct {
	Ops                  int64   `json:"ops"`
	Errors               int64   `json:"errors"`
	Seconds              float64 `json:"seconds"`
	Throughput           float64 `json:"throughput"`
	MeanMs               float64 `json:"mean_ms"`
	P50Ms                float64 `json:"p50_ms"`
	P90Ms                float64 `json:"p90_ms"`
	P99Ms                float64 `json:"p99_ms"`
	P999Ms               float64 `json:"p999_ms"`
	MaxMs                float64 `json:"max_ms"`
	ServerCPUUsPerOp     float64 `json:"server_cpu_us_per_op"`
	ServerPeakRssBytes   int64   `json:"server_peak_rss_bytes"`
	ClientCPUUsPerOp     float64 `json:"client_cpu_us_per_op"`
	FirstError           string  `json:"first_error,omitempty"`
	ServerCPUTicksOfRun  int64   `json:"server_cpu_ticks"`
	ServerCPUTicksPerSec int64   `json:"clk_tck"`
}

func parseFlags() (options, error) {
	var o options
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated host:port of the members")
	flag.IntVar(&o.conns, "conns", 10, "clientv3.Client instances (gRPC connections per endpoint)")
	flag.IntVar(&o.clients, "clients", 100, "concurrent goroutines, one request in flight each")
	flag.Int64Var(&o.total, "total", 20000, "measured operations")
	flag.Int64Var(&o.warmup, "warmup", -1, "unmeasured operations first (default total/10, at most 2000)")
	flag.StringVar(&o.workload, "workload", "put", "put, get or txn-create")
	flag.IntVar(&o.valSize, "val-size", 256, "value size in bytes")
	flag.IntVar(&o.keys, "keys", 1000, "distinct keys")
	flag.StringVar(&o.prefix, "prefix", "", "key prefix (default: one per run, so txn-create starts on absent keys)")
	pids := flag.String("pid", "", "comma-separated server PIDs whose CPU is measured")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "deadline of each request")
	flag.BoolVar(&o.json, "json", false, "print one JSON line")
	flag.Parse()
	for _, e := range strings.Split(*endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.endpoints = append(o.endpoints, e)
		}
	}
	if len(o.endpoints) == 0 {
		return o, fmt.Errorf("--endpoints: no endpoint in %q", *endpoints)
	}
	for _, p := range strings.Split(*pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("--pid: %q is not a process id", p)
		}
		o.pids = append(o.pids, n)
	}
	switch {
	case o.conns < 1:
		return o, fmt.Errorf("--conns must be at least 1, got %d", o.conns)
	case o.clients < 1:
		return o, fmt.Errorf("--clients must be at least 1, got %d", o.clients)
	case o.total < 1:
		return o, fmt.Errorf("--total must be at least 1, got %d", o.total)
	case o.keys < 1:
		return o, fmt.Errorf("--keys must be at least 1, got %d", o.keys)
	case o.valSize < 0:
		return o, fmt.Errorf("--val-size must not be negative, got %d", o.valSize)
	}
	if o.workload != "put" && o.workload != "get" && o.workload != "txn-create" {
		return o, fmt.Errorf("--workload: %q is not put, get or txn-create", o.workload)
	}
	if o.warmup < 0 {
		o.warmup = o.total / 10
		if o.warmup > 2000 {
			o.warmup = 2000
		}
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("clientv3-load/%d/", time.Now().UnixNano())
	}
	return o, nil
}

// cpuTicks is utime+stime of the process (all its threads), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name is in parentheses and may hold spaces: fields start after ") ".
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return u + st, nil
}

func sumTicks(pids []int) (int64, error) {
	var total int64
	for _, p := range pids {
		t, err := cpuTicks(p)
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

// peakRss is VmHWM of the process, in bytes (0 when unknown).
func peakRss(pid int) int64 {
	b, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// clkTck is USER_HZ; Linux reports /proc times in it, 100 on every mainstream build.
const clkTck = 100

type loader struct {
	o       options
	clis    []*clientv3.Client
	value   string
	next    int64 // operations handed out in the current phase
	limit   int64
	errors  int64
	errOnce sync.Once
	firstEr string
}

func (l *loader) key(r *rand.Rand) string {
	return l.o.prefix + fmt.Sprintf("%08d", r.Intn(l.o.keys))
}

func (l *loader) call(cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.timeout)
	defer cancel()
	var err error
	switch l.o.workload {
	case "put":
		_, err = cli.Put(ctx, key, l.value)
	case "get":
		_, err = cli.Get(ctx, key, clientv3.WithSerializable())
	case "txn-create":
		_, err = cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, l.value)).
			Else(clientv3.OpGet(key)).
			Commit()
	}
	return err
}

// phase runs n operations over all goroutines and returns each one's latencies.
func (l *loader) phase(n int64) [][]time.Duration {
	atomic.StoreInt64(&l.next, 0)
	l.limit = n
	lat := make([][]time.Duration, l.o.clients)
	var wg sync.WaitGroup
	for g := 0; g < l.o.clients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g) + time.Now().UnixNano()))
			cli := l.clis[g%len(l.clis)]
			mine := make([]time.Duration, 0, n/int64(l.o.clients)+1)
			for atomic.AddInt64(&l.next, 1) <= l.limit {
				k := l.key(r)
				start := time.Now()
				err := l.call(cli, k)
				mine = append(mine, time.Since(start))
				if err != nil {
					atomic.AddInt64(&l.errors, 1)
					l.errOnce.Do(func() { l.firstEr = err.Error() })
				}
			}
			lat[g] = mine
		}(g)
	}
	wg.Wait()
	return lat
}

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e6
}

func run(o options) (result, error) {
	var res result
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	l := &loader{o: o, value: strings.Repeat("v", o.valSize)}
	for i := 0; i < o.conns; i++ {
		// Kubernetes' settings (apiserver storagebackend/factory/etcd3.go): keepalive
		// pings every 30 s with a 10 s timeout, and a blocking dial.
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            o.endpoints,
			DialTimeout:          20 * time.Second,
			DialKeepAliveTime:    30 * time.Second,
			DialKeepAliveTimeout: 10 * time.Second,
			DialOptions:          []grpc.DialOption{grpc.WithBlock()},
			LogConfig:            &quiet,
		})
		if err != nil {
			return res, fmt.Errorf("connecting to %v: %v", o.endpoints, err)
		}
		defer cli.Close()
		l.clis = append(l.clis, cli)
	}
	if o.workload == "get" {
		// The keys exist before they are read; written from one client, unmeasured.
		saved := o.workload
		l.o.workload = "put"
		for k := 0; k < o.keys; k++ {
			if err := l.call(l.clis[0], o.prefix+fmt.Sprintf("%08d", k)); err != nil {
				return res, fmt.Errorf("writing key %d before the reads: %v", k, err)
			}
		}
		l.o.workload = saved
	}
	if o.warmup > 0 {
		l.phase(o.warmup)
	}
	l.errors, l.firstEr, l.errOnce = 0, "", sync.Once{}
	before, err := sumTicks(o.pids)
	if err != nil {
		return res, err
	}
	selfBefore, _ := cpuTicks(os.Getpid())
	start := time.Now()
	lat := l.phase(o.total)
	elapsed := time.Since(start)
	after, err := sumTicks(o.pids)
	if err != nil {
		return res, err
	}
	selfAfter, _ := cpuTicks(os.Getpid())

	var all []time.Duration
	var sum time.Duration
	for _, m := range lat {
		all = append(all, m...)
		for _, d := range m {
			sum += d
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res.Ops = int64(len(all))
	res.Errors = atomic.LoadInt64(&l.errors)
	res.FirstError = l.firstEr
	res.Seconds = elapsed.Seconds()
	res.Throughput = float64(res.Ops) / elapsed.Seconds()
	if res.Ops > 0 {
		res.MeanMs = float64(sum) / float64(res.Ops) / 1e6
	}
	res.P50Ms = percentile(all, 0.50)
	res.P90Ms = percentile(all, 0.90)
	res.P99Ms = percentile(all, 0.99)
	res.P999Ms = percentile(all, 0.999)
	res.MaxMs = percentile(all, 1.0)
	res.ServerCPUTicksOfRun = after - before
	res.ServerCPUTicksPerSec = clkTck
	if len(o.pids) > 0 && res.Ops > 0 {
		res.ServerCPUUsPerOp = float64(after-before) * 1e6 / clkTck / float64(res.Ops)
		for _, p := range o.pids {
			res.ServerPeakRssBytes += peakRss(p)
		}
	}
	if res.Ops > 0 {
		res.ClientCPUUsPerOp = float64(selfAfter-selfBefore) * 1e6 / clkTck / float64(res.Ops)
	}
	return res, nil
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "clientv3_load:", err)
		os.Exit(2)
	}
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clientv3_load:", err)
		os.Exit(1)
	}
	if o.json {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("%-22s %s x%d conns, %d clients, %d B values on %d keys\n", "workload", o.workload,
		o.conns, o.clients, o.valSize, o.keys)
	fmt.Printf("%-22s %12d (%d errors)\n", "operations", res.Ops, res.Errors)
	fmt.Printf("%-22s %12.1f\n", "throughput (ops/s)", res.Throughput)
	fmt.Printf("%-22s %12.3f\n", "latency p50 (ms)", res.P50Ms)
	fmt.Printf("%-22s %12.3f\n", "latency p90 (ms)", res.P90Ms)
	fmt.Printf("%-22s %12.3f\n", "latency p99 (ms)", res.P99Ms)
	fmt.Printf("%-22s %12.3f\n", "latency p99.9 (ms)", res.P999Ms)
	if len(o.pids) > 0 {
		fmt.Printf("%-22s %12.1f\n", "server CPU (us/op)", res.ServerCPUUsPerOp)
	}
	fmt.Printf("%-22s %12.1f\n", "client CPU (us/op)", res.ClientCPUUsPerOp)
	if res.FirstError != "" {
		fmt.Printf("first error: %s\n", res.FirstError)
	}
}
