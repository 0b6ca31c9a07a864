"""A step that needs far more memory than it asks for."""

from metaflow import FlowSpec, nomad, retry, step


class OomFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.hungry)

    @retry(times=1, minutes_between_retries=0)
    @nomad(memory=200)
    @step
    def hungry(self):
        print("allocating 800 MB in a 200 MB task", flush=True)
        block = bytearray(800 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    OomFlow()
