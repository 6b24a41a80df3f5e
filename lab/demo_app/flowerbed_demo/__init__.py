"""The lab's demo Celery app (flowerbed_demo.app:app)."""
