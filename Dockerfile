# The Ensemble image: one image, four services. docker-compose.yml and deploy/k8s run it as
#   ensemble <service> --port 8000     (referrals | partners | engagement | notifications)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (pyproject's packages and its readme): no .venv, tests or data.
COPY pyproject.toml README.md ./
COPY ensemble ./ensemble
COPY runtime ./runtime
COPY contracts ./contracts
COPY services ./services
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ensemble \
    && mkdir -p /var/lib/ensemble && chown ensemble /var/lib/ensemble

# The installed package cannot find deploy/districts.toml next to its code, so the image
# carries it at a fixed path (compose and k8s mount the deployment's own file over it).
COPY deploy/districts.toml /etc/ensemble/districts.toml

# Writable state (if any) lives outside the code, which the service user cannot change.
# ENSEMBLE_HOST: the CLI binds 127.0.0.1 by default; in a container that would be unreachable.
ENV ENSEMBLE_DATA_DIR=/var/lib/ensemble \
    ENSEMBLE_DISTRICTS_FILE=/etc/ensemble/districts.toml \
    ENSEMBLE_HOST=0.0.0.0

USER 10001
EXPOSE 8000
ENTRYPOINT ["ensemble"]
CMD ["--help"]
