from django.db import migrations, models


class Migration(migrations.Migration):
    """The ERP circuit breaker's state (orders/services/erp_breaker.py)."""

    dependencies = [
        ("feeds", "0010_vtexratelimit"),
    ]

    operations = [
        migrations.AddField(
            model_name="erpconnection",
            name="breaker_failures",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="erpconnection",
            name="breaker_open_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
