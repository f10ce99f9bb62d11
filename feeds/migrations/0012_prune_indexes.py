from django.db import migrations, models


class Migration(migrations.Migration):
    """The admin's search by exact event id: without it, each search reads every stored event."""

    dependencies = [
        ('feeds', '0011_erp_breaker'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='feedevent',
            index=models.Index(fields=['event_id'], name='feed_event_event_id'),
        ),
    ]
