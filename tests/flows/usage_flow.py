"""Steps whose memory is known, for Nomad's usage figures (issue 23): one that ends
at once, then side by side one that idles as long as the other (the task's own
footprint) and one that holds HOLD_MB more for HOLD_S seconds.  The last step's
card charts what they asked for and used."""

import os
import time

from metaflow import FlowSpec, card, nomad, step

HOLD_MB = int(os.environ.get("USAGE_HOLD_MB", "300"))
HOLD_S = float(os.environ.get("USAGE_HOLD_S", "36"))


def hold(megabytes: int, seconds: float) -> None:
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print(f"holding {megabytes} MB for {seconds:g} s", flush=True)
    time.sleep(seconds)
    del block


class UsageFlow(FlowSpec):
    @nomad(memory=1000)
    @step
    def start(self):
        print("short step", flush=True)
        self.next(self.idle, self.hold)

    @nomad(memory=1000, cpu=1)
    @step
    def idle(self):
        hold(0, HOLD_S)
        self.next(self.join)

    @nomad(memory=1000, cpu=1)
    @step
    def hold(self):
        hold(HOLD_MB, HOLD_S)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @card(type="nomad_usage")
    @step
    def end(self):
        pass


if __name__ == "__main__":
    UsageFlow()
