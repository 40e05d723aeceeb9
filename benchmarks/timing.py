"""Wall and CPU clocks for the benchmarks' part-by-part timings, and the load average."""

import os
import time


def clocks() -> tuple[float, float]:
  """(wall s, process CPU s) now."""
  return time.perf_counter(), time.process_time()


def since(start: tuple[float, float], end: tuple[float, float] | None = None):
  """(wall s, process CPU s) from ``start`` to ``end`` (default: now)."""
  end = end or clocks()
  return end[0] - start[0], end[1] - start[1]


def print_parts(title: str, times: dict[str, tuple[float, float]]) -> float:
  """Prints one row per part (wall s, share of the total, CPU s) and the total; returns the total
  wall seconds."""
  total = sum(wall for wall, _ in times.values())
  print(f"{title:45s}{'wall_s':>8s}{'share':>7s}{'cpu_s':>8s}")
  for part, (wall, cpu) in times.items():
    print(f"{part:45s}{wall:8.2f}{100 * wall / total:6.0f}%{cpu:8.2f}")
  print(f"{'total':45s}{total:8.2f}{'':7s}{sum(cpu for _, cpu in times.values()):8.2f}",
        flush=True)
  return total


def load_average() -> str:
  """The 1-, 5- and 15-minute load averages: wall times grow with them."""
  return " ".join(f"{x:.2f}" for x in os.getloadavg())
