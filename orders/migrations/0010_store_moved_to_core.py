"""Orders' foreign keys now point at core.Store (core 0001): in the state only, the column and table are the same."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0001_initial"),
        ("orders", "0009_erprequest"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ordersync",
                    name="store",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="orders",
                                            to="core.store"),
                ),
                migrations.AlterField(
                    model_name="alertchannel",
                    name="store",
                    field=models.ForeignKey(blank=True, help_text="Empty: alerts of every store", null=True,
                                            on_delete=django.db.models.deletion.CASCADE,
                                            related_name="alert_channels", to="core.store"),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="store",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="alerts",
                                            to="core.store"),
                ),
            ],
            database_operations=[],
        ),
    ]
