package kinesis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	kds "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/logging"
	"github.com/rs/zerolog"
)

// NewClient returns a Kinesis client configured the standard AWS way:
// region and credentials from the environment, shared files, the ECS task
// role or IRSA; the endpoint from AWS_ENDPOINT_URL_KINESIS or
// AWS_ENDPOINT_URL (a local emulator). A stream ARN names its region, used
// when none is configured. No call is made: a stream that is unreachable
// at start is retried like one lost later.
//
// The SDK's own retries are limited to one more attempt, without its
// client-side retry quota: the sink resends with its own backoff and knows
// which records failed, and a call's deadline bounds both attempts.
//
// The SDK's own log lines (a response body not drained after a cut call,
// a clock skew) go to log at debug level, as JSON like the rest.
func NewClient(ctx context.Context, stream string, log zerolog.Logger) (*kds.Client, error) {
	sdkLog := log.With().Str("component", "aws-sdk").Logger()
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithLogger(logging.LoggerFunc(func(_ logging.Classification, format string, v ...any) {
			sdkLog.Debug().Msgf(format, v...)
		})),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 2
				o.MaxBackoff = time.Second
				o.RateLimiter = ratelimit.None
			})
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("KINESIS_STREAM_NAME: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = arnRegion(stream)
	}
	if cfg.Region == "" {
		return nil, errors.New("KINESIS_STREAM_NAME: no AWS region: set AWS_REGION (or give the stream's ARN)")
	}
	return kds.NewFromConfig(cfg), nil
}

// arnRegion is the region of a stream ARN
// (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), or "".
func arnRegion(stream string) string {
	parts := strings.SplitN(stream, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" {
		return ""
	}
	return parts[3]
}
