package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/seer-ml/seer/stream"
)

// kafkaOpts is the one place that builds what every Kafka client seer makes
// shares — serve's pipeline, the monitor's alert and lag clients, the demo
// and loadtest clients: the seed brokers, a client id naming the client's
// role (kafka.client_id + "-" + role), TLS (kafka.tls) and SASL
// (kafka.sasl), franz-go's logs through slog and, when reg is set, its
// metrics through kprom, labelled with the role. No client goes without
// TLS and SASL when they are configured.
func kafkaOpts(cfg stream.Config, role string, logger *slog.Logger, reg prometheus.Registerer) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID + "-" + role),
		kgo.WithLogger(kslog.New(logger.With("component", "kafka", "client", role))),
	}
	if d := cfg.TLS.Dialer(); d != nil {
		opts = append(opts, kgo.Dialer(d))
	}
	if m := cfg.SASL.Auth(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	if reg != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("seer_kafka",
			kprom.Registerer(prometheus.WrapRegistererWith(prometheus.Labels{"client": role}, reg)))))
	}
	return opts
}
