package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Bounds of the Kinesis settings.
const (
	minKinesisBuffer = 1 << 20 // one record of the largest size Kinesis takes
	maxKinesisBuffer = 16 << 30
)

var (
	kinesisStreamName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	kinesisStreamARN  = regexp.MustCompile(`^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]{12}:stream/[a-zA-Z0-9_.-]{1,128}$`)
)

// validateKinesis checks the Kinesis settings. The knobs are checked even
// when KINESIS_STREAM_NAME is empty: a bad value is a typo either way.
func (c *Config) validateKinesis() []error {
	var errs []error
	c.KinesisStreamName = strings.TrimSpace(c.KinesisStreamName)
	if s := c.KinesisStreamName; s != "" && !kinesisStreamName.MatchString(s) && !kinesisStreamARN.MatchString(s) {
		errs = append(errs, fmt.Errorf("KINESIS_STREAM_NAME: %q is neither a stream name (1-128 of A-Z a-z 0-9 _ . -) nor a stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)", s))
	}
	if f := c.KinesisPartitionKeyField; f != "" && !plainField(f) {
		errs = append(errs, fmt.Errorf("KINESIS_PARTITION_KEY_FIELD: must be a plain field name"))
	}
	if c.KinesisBufferBytes < minKinesisBuffer || c.KinesisBufferBytes > maxKinesisBuffer {
		errs = append(errs, fmt.Errorf("KINESIS_BUFFER_BYTES: must be between %d (one record of Kinesis' largest size) and %d", minKinesisBuffer, int64(maxKinesisBuffer)))
	}
	if c.KinesisFlushInterval < minTick || c.KinesisFlushInterval > time.Minute {
		errs = append(errs, fmt.Errorf("KINESIS_FLUSH_INTERVAL: must be between %s and 1m", minTick))
	}
	return errs
}
