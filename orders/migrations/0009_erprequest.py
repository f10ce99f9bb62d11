"""Issue 10: the ERP's requests to VTEX (invoice, tracking, cancel), the order's flag that some wait, and the
timeline's steps for them."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0008_ordersync_claimed_by'),
    ]

    operations = [
        migrations.AddField(
            model_name='ordersync',
            name='vtex_pending',
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name='syncattempt',
            name='step',
            field=models.CharField(choices=[('event', 'Event received'), ('get_order', 'Get order from VTEX'), ('erp_send', 'Send to ERP'), ('start_handling', 'Start handling'), ('erp_cancel', 'Cancel notice to ERP'), ('vtex_invoice', 'Invoice to VTEX'), ('vtex_tracking', 'Tracking to VTEX'), ('vtex_cancel', 'Cancel on VTEX'), ('staff', 'Staff action')], max_length=20),
        ),
        migrations.CreateModel(
            name='ErpRequest',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('invoice', 'Invoice'), ('tracking', 'Tracking'), ('cancel', 'Cancel')], max_length=10)),
                ('state', models.CharField(choices=[('pending', 'Pending'), ('sent', 'Sent'), ('refused', 'Refused by VTEX'), ('failed', 'Failed'), ('confirmed', 'Confirmed')], default='pending', max_length=10)),
                ('idempotency_key', models.CharField(max_length=200)),
                ('payload', models.JSONField()),
                ('invoice_number', models.CharField(blank=True, max_length=100)),
                ('invoice_type', models.CharField(blank=True, max_length=10)),
                ('invoice_value', models.BigIntegerField(blank=True, null=True)),
                ('reason', models.TextField(blank=True)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('last_error', models.TextField(blank=True)),
                ('receipt', models.CharField(blank=True, max_length=100)),
                ('vtex_answer', models.TextField(blank=True)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('confirmed_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('requested_by', models.CharField(default='erp', max_length=150)),
                ('order', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='erp_requests', to='orders.ordersync')),
            ],
            options={
                'ordering': ['created_at', 'id'],
                'indexes': [models.Index(fields=['state', 'created_at'], name='erp_request_state_created')],
                'constraints': [models.UniqueConstraint(fields=('order', 'kind', 'idempotency_key'), name='erp_request_unique')],
            },
        ),
    ]
