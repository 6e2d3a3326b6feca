// Package kinesistest gives tests a real Kinesis API: kinesalite (the npm
// package, a Kinesis implementation) on a free loopback port, which a test
// can kill and restart, and [Fake], a small server speaking the Kinesis
// JSON protocol that fails records, throttles or answers 500 on demand.
//
// When kinesalite is missing, the test fails under CI=true (.ci/run
// installs it with npm) and is skipped otherwise, saying so.
package kinesistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	kds "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"event-dispatcher/internal/brokertest"
)

// Env points the standard AWS chain at endpoint with dummy credentials, for
// the code under test to find it the way it would in production. Tests
// that call it cannot run in parallel (t.Setenv).
func Env(t testing.TB, endpoint string) {
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", endpoint)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
}

// Kinesalite is one kinesalite process.
type Kinesalite struct {
	t        testing.TB
	bin      string
	Port     int
	Endpoint string // http://127.0.0.1:port
	cmd      *exec.Cmd
	exited   chan struct{}
	output   brokertest.Log
}

// Start runs kinesalite on a free loopback port; the test's cleanup kills it.
func Start(t testing.TB) *Kinesalite {
	t.Helper()
	bin, err := exec.LookPath("kinesalite")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs kinesalite (npm install -g kinesalite, which .ci/run does): %v", err)
		}
		t.Skip("skipped: no kinesalite on this machine (npm install -g kinesalite, or run .ci/run)")
	}
	k := &Kinesalite{t: t, bin: bin, Port: brokertest.FreePort(t)}
	k.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", k.Port)
	k.Restart()
	return k
}

// Restart runs kinesalite (again, on the same port, empty: it keeps its
// streams in memory) and waits until it answers.
func (k *Kinesalite) Restart() {
	k.t.Helper()
	if k.cmd != nil {
		k.t.Fatal("kinesalite already running")
	}
	cmd := exec.Command(k.bin, "--port", strconv.Itoa(k.Port), "--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0")
	cmd.Stdout, cmd.Stderr = &k.output, &k.output
	if err := cmd.Start(); err != nil {
		k.t.Fatalf("start kinesalite: %v", err)
	}
	k.cmd, k.exited = cmd, make(chan struct{})
	exited := k.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	k.t.Cleanup(func() {
		if k.cmd == cmd {
			k.Kill()
		}
	})
	c := k.Client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.ListStreams(ctx, &kds.ListStreamsInput{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			k.t.Fatalf("kinesalite exited at start:\n%s", k.Output())
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("kinesalite not answering on port %d after 20 s: %v", k.Port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops kinesalite at once (SIGKILL), as a crash would.
func (k *Kinesalite) Kill() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGKILL)
	<-k.exited
	k.cmd = nil
}

// Output is what kinesalite printed.
func (k *Kinesalite) Output() string { return k.output.String() }

// Client is a Kinesis client for the test's own calls (creating streams,
// reading records back).
func (k *Kinesalite) Client() *kds.Client {
	return kds.New(kds.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(k.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
}

// CreateStream creates a stream of shards shards and waits until it is
// active.
func (k *Kinesalite) CreateStream(name string, shards int32) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := k.Client()
	if _, err := c.CreateStream(ctx, &kds.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)}); err != nil {
		k.t.Fatalf("CreateStream: %v", err)
	}
	w := kds.NewStreamExistsWaiter(c, func(o *kds.StreamExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx, &kds.DescribeStreamInput{StreamName: aws.String(name)}, 20*time.Second); err != nil {
		k.t.Fatalf("stream %s not active: %v", name, err)
	}
}

// Record is one record read back, with the shard it was on.
type Record struct {
	Shard string
	Key   string
	Data  []byte
}

// ReadAll returns every record of every shard of the stream, each shard's
// in order.
func (k *Kinesalite) ReadAll(name string) []Record {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := k.Client()
	shards, err := c.ListShards(ctx, &kds.ListShardsInput{StreamName: aws.String(name)})
	if err != nil {
		k.t.Fatalf("ListShards: %v", err)
	}
	var all []Record
	for _, sh := range shards.Shards {
		it, err := c.GetShardIterator(ctx, &kds.GetShardIteratorInput{
			StreamName: aws.String(name), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			k.t.Fatalf("GetShardIterator: %v", err)
		}
		iter := it.ShardIterator
		for iter != nil {
			out, err := c.GetRecords(ctx, &kds.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
			if err != nil {
				k.t.Fatalf("GetRecords: %v", err)
			}
			for _, r := range out.Records {
				all = append(all, Record{Shard: *sh.ShardId, Key: aws.ToString(r.PartitionKey), Data: slices.Clone(r.Data)})
			}
			if len(out.Records) == 0 || aws.ToInt64(out.MillisBehindLatest) == 0 && len(out.Records) < 10000 {
				break
			}
			iter = out.NextShardIterator
		}
	}
	return all
}
