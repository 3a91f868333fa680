"""What a district watches of engagement. Labels are bounded (districts, channels, results)."""

from prometheus_client import Counter

ANNOUNCED = Counter("ensemble_announcement_families", "Families an announcement was queued for",
                    ["district", "result"])
REPLIES = Counter("ensemble_family_replies", "Family replies by where they went", ["channel",
                  "result"])
