package netlab

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ParseIperf3 reads the JSON report of an iperf3 client (iperf3 -J) and
// returns the throughput the receiver saw, in bits per second.
func ParseIperf3(out []byte) (float64, error) {
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("iperf3 report: %w", err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	if res.End.SumReceived.Bytes <= 0 || res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3: the receiver got nothing")
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
